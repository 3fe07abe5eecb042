package io.vmfork.vmm.guest;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A host launches for others only its shipped guests and the files under its configured
 * image directories: every way out of them (absolute paths, {@code ..}, a symlink) is
 * refused with the same message, which does not say whether the file exists or is an ELF.
 */
class GuestImagesTest {
    @TempDir
    Path root;
    private Path images;
    private Path outsideElf;
    private GuestImages confined;

    @BeforeEach
    void layout() throws Exception {
        images = Files.createDirectories(root.resolve("images"));
        Files.createDirectories(root.resolve("outside"));
        byte[] hello = shippedBytes("hello");
        // A real static guest ELF outside the image directory, and two inside it.
        outsideElf = Files.write(root.resolve("outside/app.elf"), hello);
        Files.write(images.resolve("app.elf"), hello);
        Files.write(Files.createDirectories(images.resolve("team")).resolve("worker"), hello);
        Files.createSymbolicLink(images.resolve("alias.elf"), images.resolve("app.elf"));
        Files.createSymbolicLink(images.resolve("escape.elf"), outsideElf);
        Files.createSymbolicLink(images.resolve("passwd"), Path.of("/etc/passwd"));
        Files.createSymbolicLink(images.resolve("up"), root.resolve("outside"));
        confined = GuestImages.of(List.of(images));
    }

    private static byte[] shippedBytes(String name) throws Exception {
        try (InputStream in = Guests.class.getResourceAsStream("/io/vmfork/guests/" + name + ".elf")) {
            return in.readAllBytes();
        }
    }

    private void refused(String name) {
        InvalidGuestImageException e = assertThrows(InvalidGuestImageException.class, () -> confined.resolve(name),
                name + " must be refused");
        assertEquals(GuestImages.refusal(name).getMessage(), e.getMessage());
        assertTrue(e.getMessage().startsWith("guest image '" + name.replace('\0', '?') + "' is not one of this node's guest images"),
                e.getMessage());
        assertTrue(e.getMessage().contains("vmfork.node.images"), e.getMessage());
    }

    @Test
    void aFileOfTheHostByAbsolutePathIsRefusedWhetherItExistsOrNot() {
        refused("/etc/passwd");
        refused("/etc/shadow");
        refused("/etc/no-such-file-here");
        refused("//etc/passwd");
    }

    @Test
    void anAbsolutePathToARealElfIsRefusedOutsideAndInsideTheDirectories() {
        // A real guest ELF, which the local command line's resolver takes by path.
        assertEquals(Guests.shipped("hello").entry(), Guests.resolve(outsideElf.toString()).entry());
        refused(outsideElf.toString());
        refused(images.resolve("app.elf").toString());
    }

    @Test
    void dotDotIsRefusedEvenWhenItWouldLandOnARealElf() {
        refused("../outside/app.elf");
        refused("../x");
        refused("team/../app.elf");
        refused("./app.elf");
        refused("..");
    }

    @Test
    void aSymlinkOutOfTheDirectoriesIsRefused() {
        assertTrue(Files.isSymbolicLink(images.resolve("escape.elf")));
        refused("escape.elf");
        refused("escape");
        refused("passwd");
        refused("up/app.elf"); // a symlinked directory that leads out
    }

    @Test
    void aDirectoryOrANameOfNothingIsRefused() {
        refused("team");
        refused("no-such-guest");
        refused("");
        refused("a\0b");
    }

    @Test
    void anImageInADirectoryResolvesByName() {
        assertEquals("app.elf", confined.resolve("app.elf").name());
        assertEquals("app", confined.resolve("app").name());
        assertEquals("team/worker", confined.resolve("team/worker").name());
        assertEquals("alias.elf", confined.resolve("alias.elf").name()); // a symlink that stays inside
        // The bytes are the file's: the same entry point as the shipped guest they came from.
        assertEquals(Guests.shipped("hello").entry(), confined.resolve("app").entry());
    }

    @Test
    void shippedGuestsResolveByNameWithoutAnyDirectory() {
        assertEquals(Guests.shipped("spin").entry(), GuestImages.shippedOnly().resolve("spin").entry());
        InvalidGuestImageException e = assertThrows(InvalidGuestImageException.class,
                () -> GuestImages.shippedOnly().resolve("app"));
        assertEquals(GuestImages.refusal("app").getMessage(), e.getMessage());
    }

    @Test
    void directoriesMustBeAbsolute() {
        assertThrows(IllegalArgumentException.class, () -> GuestImages.of(List.of(Path.of("images"))));
    }
}
