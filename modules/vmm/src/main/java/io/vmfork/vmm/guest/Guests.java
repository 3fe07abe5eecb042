package io.vmfork.vmm.guest;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The guest programs shipped in the native-kvm jar (built from its C sources by gcc), by
 * name: {@code hello}, {@code warm-worker}, and the test guests. A name that contains a
 * slash or ends in {@code .elf} is read as a path instead.
 */
public final class Guests {
    /** The examples a user can run by name. */
    public static final List<String> EXAMPLES = List.of("hello", "warm-worker");
    private static final String RESOURCE_DIR = "/io/vmfork/guests/";

    private Guests() {
    }

    /**
     * A shipped guest by name, or a path to an ELF: any file this process may read. For
     * the local user's own choice only ({@code vmfork run}, {@code vmfork snapshot}); what
     * another host asks for is resolved by {@link GuestImages}.
     */
    public static ElfImage resolve(String nameOrPath) {
        if (nameOrPath.contains("/") || nameOrPath.endsWith(".elf") || Files.exists(Path.of(nameOrPath))) {
            Path p = Path.of(nameOrPath);
            if (!Files.isRegularFile(p)) {
                throw new InvalidGuestImageException("no guest image at " + p);
            }
            return ElfImage.read(p);
        }
        return shipped(nameOrPath);
    }

    /** Whether a guest named {@code name} is shipped in the native-kvm jar. */
    public static boolean isShipped(String name) {
        return !name.contains("/") && Guests.class.getResource(RESOURCE_DIR + name + ".elf") != null;
    }

    public static ElfImage shipped(String name) {
        try (InputStream in = Guests.class.getResourceAsStream(RESOURCE_DIR + name + ".elf")) {
            if (in == null) {
                throw new InvalidGuestImageException("no shipped guest named '" + name + "' (examples: "
                        + String.join(", ", EXAMPLES) + "; or give a path to an ELF)");
            }
            return ElfImage.parse(name, in.readAllBytes());
        } catch (IOException e) {
            throw new InvalidGuestImageException("cannot read shipped guest " + name + ": " + e.getMessage(), e);
        }
    }
}
