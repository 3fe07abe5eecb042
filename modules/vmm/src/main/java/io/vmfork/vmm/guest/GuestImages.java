package io.vmfork.vmm.guest;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;

/**
 * The guest images a host launches for others (a cluster's {@code Launch}): the shipped
 * guests ({@link Guests#shipped}) and the files under the host's configured image
 * directories, by name. A name is a path relative to one of the directories (with or
 * without {@code .elf}); it is resolved to its canonical path ({@link Path#toRealPath},
 * symlinks followed) and accepted only if that path is a regular file inside the same
 * directory's canonical path. Absolute paths, {@code ..}, and symlinks that lead out of
 * the directories are refused, all with one message that says nothing of the host's
 * files (whether the file exists, whether it is an ELF): a caller on another host learns
 * only that the name is not one of this host's images.
 *
 * <p>{@link Guests#resolve}, which takes any path, is for the local user's own choice
 * ({@code vmfork run}).
 */
public final class GuestImages {
    /** The configuration key the refusal names (the cluster node's). */
    public static final String KEY = "vmfork.node.images";

    // A shipped guest's name: a resource of the native-kvm jar, never a path.
    private static final Pattern SHIPPED_NAME = Pattern.compile("^[A-Za-z0-9][A-Za-z0-9_-]*$");
    private static final int MAX_NAME = 255;

    private final List<Path> directories;

    private GuestImages(List<Path> directories) {
        this.directories = List.copyOf(directories);
    }

    /** Only the shipped guests. */
    public static GuestImages shippedOnly() {
        return new GuestImages(List.of());
    }

    /**
     * The shipped guests and the images under {@code directories} (searched in this order,
     * after the shipped guests). A directory must be absolute; one that does not exist
     * (yet) holds no image until it does.
     */
    public static GuestImages of(List<Path> directories) {
        List<Path> dirs = new ArrayList<>();
        for (Path d : directories) {
            if (d == null || !d.isAbsolute()) {
                throw new IllegalArgumentException("a guest image directory must be an absolute path, got " + d);
            }
            dirs.add(d.normalize());
        }
        return new GuestImages(dirs);
    }

    /** The configured directories (not the shipped guests). */
    public List<Path> directories() {
        return directories;
    }

    /**
     * The image named {@code name}: a shipped guest, else {@code name} or {@code name.elf}
     * under the first directory that holds it.
     *
     * @throws InvalidGuestImageException with {@link #refusal} for a name that is none of
     *                                    these, whatever the reason; or with the image's own
     *                                    fault for a file in a directory that is no guest
     */
    public ElfImage resolve(String name) {
        if (name == null || name.isEmpty() || name.length() > MAX_NAME || name.indexOf('\0') >= 0) {
            throw refusal(name);
        }
        if (SHIPPED_NAME.matcher(name).matches() && Guests.isShipped(name)) {
            return Guests.shipped(name);
        }
        Path relative;
        try {
            relative = Path.of(name);
        } catch (InvalidPathException e) {
            throw refusal(name);
        }
        if (relative.isAbsolute() || name.startsWith("/") || name.startsWith("~")) {
            throw refusal(name);
        }
        for (Path part : relative) {
            if (part.toString().equals("..") || part.toString().equals(".")) {
                throw refusal(name);
            }
        }
        for (Path dir : directories) {
            Path found = inside(dir, relative);
            if (found == null && !name.endsWith(".elf")) {
                found = inside(dir, Path.of(name + ".elf"));
            }
            if (found != null) {
                return read(name, found);
            }
        }
        throw refusal(name);
    }

    /** The canonical path of {@code dir/relative} if it is a regular file inside {@code dir}'s, else null. */
    private static Path inside(Path dir, Path relative) {
        try {
            Path realDir = dir.toRealPath();
            Path real = realDir.resolve(relative).toRealPath();
            if (!real.startsWith(realDir) || real.equals(realDir)
                    || !Files.isRegularFile(real, LinkOption.NOFOLLOW_LINKS)) {
                return null;
            }
            return real;
        } catch (IOException | InvalidPathException | SecurityException e) {
            return null;
        }
    }

    // Read without following a symlink put in the file's place since it was resolved, and
    // named by the caller's name: a fault of the file names no path of this host.
    private static ElfImage read(String name, Path real) {
        try (var in = Files.newByteChannel(real, java.nio.file.StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
            long size = in.size();
            if (size > ElfImage.MAX_FILE_SIZE) {
                throw new InvalidGuestImageException("guest image '" + name + "': " + size
                        + " bytes is larger than the " + ElfImage.MAX_FILE_SIZE + " bytes a guest image may have");
            }
            java.nio.ByteBuffer bytes = java.nio.ByteBuffer.allocate((int) size);
            while (bytes.hasRemaining() && in.read(bytes) >= 0) {
                // read it whole
            }
            if (bytes.hasRemaining()) {
                throw new InvalidGuestImageException("guest image '" + name + "' changed while it was read");
            }
            return ElfImage.parse(name, bytes.array());
        } catch (IOException e) {
            throw refusal(name);
        }
    }

    /** The one refusal of a name that is not an image of this host: it reveals nothing else. */
    public static InvalidGuestImageException refusal(String name) {
        String shown = name == null ? "" : name.length() > 80 ? name.substring(0, 80) + "..." : name;
        return new InvalidGuestImageException("guest image '" + shown.replaceAll("\\p{Cntrl}", "?")
                + "' is not one of this node's guest images (shipped guests: " + String.join(", ", Guests.EXAMPLES)
                + ", ...; or a file under " + KEY + ")");
    }
}
