package io.vmfork.vmm.linux;

import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.x86.GuestLayout;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A Linux process start inside guest RAM (docs/linux.md, "Process start"): the program's
 * segments (a static PIE at {@link #PIE_BASE}), the stack as the x86-64 System V ABI and
 * Linux's {@code create_elf_tables} lay it out (argc, argv, envp, the auxiliary vector,
 * then the strings and AT_RANDOM's bytes above), the program break after the image and
 * the mmap area below the stack.
 *
 * <pre>
 * 0x200000 ..        nothing of the program's below (the VMM's page tables, boot info)
 * image              at its link address (ET_EXEC) or PIE_BASE (ET_DYN)
 * brkStart ..        the program break, growing up
 *   ..  mmapTop      anonymous mappings, handed out downwards
 * guard page
 * stack              stack-size bytes, RSP near memory_size
 * </pre>
 */
public final class ProcessStart {
    /** Where a static PIE is loaded (its lowest segment). */
    public static final long PIE_BASE = 0x400000;
    /** The uid, euid, gid and egid a program sees: an ordinary user, nothing of the host's. */
    public static final long UID = 1000, GID = 1000;
    /** What AT_PLATFORM names. */
    static final String PLATFORM = "x86_64";
    /** Bytes the start needs at least between the break and the stack (the first mappings of libc). */
    static final long MIN_FREE = 1L << 20;

    static final int AT_NULL = 0, AT_PHDR = 3, AT_PHENT = 4, AT_PHNUM = 5, AT_PAGESZ = 6, AT_BASE = 7, AT_FLAGS = 8,
            AT_ENTRY = 9, AT_UID = 11, AT_EUID = 12, AT_GID = 13, AT_EGID = 14, AT_PLATFORM = 15, AT_HWCAP = 16,
            AT_CLKTCK = 17, AT_SECURE = 23, AT_RANDOM = 25, AT_HWCAP2 = 26, AT_EXECFN = 31;
    /** USER_HZ: what AT_CLKTCK says and times() counts in. */
    static final long CLOCK_TICKS = 100;

    private ProcessStart() {
    }

    /** What a start made: the registers' values and the state the program's system calls begin from. */
    public record Started(long entry, long stackPointer, LinuxState state) {
    }

    /**
     * Loads {@code image} into {@code memory} (zero but for what the VMM put below
     * {@link GuestLayout#IMAGE_MIN}) and lays out its stack. {@code random}: 16 fresh bytes
     * for AT_RANDOM; {@code hwcap}: CPUID.1:EDX as the guest sees it.
     *
     * @throws IllegalArgumentException naming what does not fit
     */
    public static Started load(ElfImage image, GuestMemory memory, long stackSize, ProgramArgs args, byte[] random,
            long hwcap) {
        if (image.kind() != ElfImage.Kind.LINUX) {
            throw new IllegalArgumentException(image.name() + " is not a Linux program");
        }
        long size = memory.size();
        long base = image.positionIndependent() ? PIE_BASE - (image.lowestAddress() & ~(GuestLayout.PAGE - 1)) : 0;
        long lowest = base + image.lowestAddress();
        long end = base + image.endAddress();
        if (lowest < GuestLayout.IMAGE_MIN) {
            throw new IllegalArgumentException(String.format("%s loads at 0x%x, below 0x%x where a program may load",
                    image.name(), lowest, GuestLayout.IMAGE_MIN));
        }
        long stackBottom = size - stackSize;
        long mmapTop = stackBottom - GuestLayout.PAGE; // a guard page, never handed out
        long brkStart = pageUp(end);
        if (stackSize < GuestLayout.PAGE * 4 || brkStart + MIN_FREE > mmapTop) {
            throw new IllegalArgumentException(String.format(
                    "%s (up to 0x%x) does not fit in %d MiB of RAM with a %d KiB stack and 1 MiB for its memory",
                    image.name(), end, size >> 20, stackSize >> 10));
        }
        for (ElfImage.Segment seg : image.segments()) {
            memory.write(base + seg.vaddr(), seg.data());
        }
        String execfn = args.argv().isEmpty() ? "/" + image.name() : args.argv().get(0);

        // The strings, from the top of the stack down: execfn, argv, envp, the platform.
        ByteArrayOutputStream strings = new ByteArrayOutputStream();
        List<Integer> argOffsets = new ArrayList<>();
        List<Integer> envOffsets = new ArrayList<>();
        for (String s : args.argv()) {
            argOffsets.add(strings.size());
            putString(strings, s);
        }
        for (String s : args.env()) {
            envOffsets.add(strings.size());
            putString(strings, s);
        }
        int platformOffset = strings.size();
        putString(strings, PLATFORM);
        int execfnOffset = strings.size();
        putString(strings, execfn);
        byte[] str = strings.toByteArray();
        long strAt = (size - 16 - str.length) & ~15L; // 16 bytes of zeros end the stack, as on Linux
        long randomAt = strAt - 16;

        long[][] auxv = {
            {AT_PHDR, image.phdrAddress() < 0 ? 0 : base + image.phdrAddress()},
            {AT_PHENT, image.phentsize()},
            {AT_PHNUM, image.phnum()},
            {AT_PAGESZ, GuestLayout.PAGE},
            {AT_BASE, 0},
            {AT_FLAGS, 0},
            {AT_ENTRY, base + image.entry()},
            {AT_UID, UID},
            {AT_EUID, UID},
            {AT_GID, GID},
            {AT_EGID, GID},
            {AT_PLATFORM, strAt + platformOffset},
            {AT_HWCAP, hwcap & 0xffffffffL},
            {AT_HWCAP2, 0},
            {AT_CLKTCK, CLOCK_TICKS},
            {AT_SECURE, 0},
            {AT_RANDOM, randomAt},
            {AT_EXECFN, strAt + execfnOffset},
            {AT_NULL, 0},
        };
        int words = 1 + args.argv().size() + 1 + args.env().size() + 1 + 2 * auxv.length;
        long sp = (randomAt - 8L * words) & ~15L; // RSP % 16 == 0 at _start, argc at RSP
        if (sp < stackBottom + GuestLayout.PAGE) {
            throw new IllegalArgumentException("arguments and environment do not fit in the " + (stackSize >> 10)
                    + " KiB stack");
        }
        ByteBuffer b = ByteBuffer.allocate(8 * words).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(args.argv().size());
        for (int off : argOffsets) {
            b.putLong(strAt + off);
        }
        b.putLong(0);
        for (int off : envOffsets) {
            b.putLong(strAt + off);
        }
        b.putLong(0);
        for (long[] a : auxv) {
            b.putLong(a[0]).putLong(a[1]);
        }
        memory.write(strAt, str);
        memory.write(randomAt, random.clone());
        memory.write(sp, b.array());

        LinuxState st = new LinuxState();
        st.brkStart = brkStart;
        st.brk = brkStart;
        st.mmapTop = mmapTop;
        st.mmapBottom = mmapTop;
        st.stackTop = size;
        st.stackSize = stackSize;
        st.execfn = execfn;
        st.root = args.root() == null ? null : args.root().toString();
        String file = image.name().substring(image.name().lastIndexOf('/') + 1);
        st.exePath = execfn.startsWith("/") ? execfn : "/" + (file.isEmpty() ? "program" : file);
        return new Started(base + image.entry(), sp, st);
    }

    private static void putString(ByteArrayOutputStream out, String s) {
        out.writeBytes(s.getBytes(StandardCharsets.UTF_8));
        out.write(0);
    }

    static long pageUp(long a) {
        return (a + GuestLayout.PAGE - 1) & ~(GuestLayout.PAGE - 1);
    }
}
