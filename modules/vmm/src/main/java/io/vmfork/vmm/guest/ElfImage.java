package io.vmfork.vmm.guest;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A vmfork guest program: a static x86-64 ELF executable, parsed and checked once, then
 * loaded into any number of VMs. Only what the loaders need is kept: the PT_LOAD
 * segments, the entry point, the program headers' place and the {@link Kind}.
 *
 * <p>Which kind (docs/linux.md, "Which kind"): an ELF that carries the vmfork guest note
 * (a PT_NOTE with an ELF note of owner {@code "vmfork"}, type {@link #NOTE_GUEST}, which
 * the SDK's start.S emits and guest.ld keeps) is an {@link Kind#SDK} guest; any other
 * static x86-64 ELF is a {@link Kind#LINUX} program. Linux programs never carry it, and
 * the SDK's guests always do, so the file alone decides; nothing is guessed from symbols
 * or from the OS/ABI byte (musl leaves it SYSV, glibc sets GNU).
 */
public final class ElfImage {
    private static final int EI_CLASS_64 = 2;
    private static final int EI_DATA_LE = 1;
    private static final int ET_EXEC = 2;
    private static final int ET_DYN = 3;
    private static final int EM_X86_64 = 62;
    private static final int PT_LOAD = 1;
    private static final int PT_INTERP = 3;
    private static final int PT_DYNAMIC = 2;
    private static final int PT_NOTE = 4;
    private static final int PT_PHDR = 6;
    private static final int MAX_SEGMENTS = 64;
    /** The type of the vmfork guest note (VMF_NOTE_GUEST). */
    public static final int NOTE_GUEST = 1;
    private static final byte[] NOTE_OWNER = {'v', 'm', 'f', 'o', 'r', 'k', 0};

    /** What a guest program is, and so how it starts and reaches its VMM. */
    public enum Kind {
        /** Built against the guest SDK: started with the boot info, talks through hypercalls (docs/hypercalls.md). */
        SDK,
        /** A static Linux program: started as a Linux process, its system calls served by the VMM (docs/linux.md). */
        LINUX
    }
    /** Guest programs are small; a larger file is refused before it is read. */
    public static final long MAX_FILE_SIZE = 256L << 20;

    /** One PT_LOAD segment: file bytes at {@code vaddr}, then zeros up to {@code memSize}. */
    public record Segment(long vaddr, byte[] data, long memSize) {
    }

    private final String name;
    private final Kind kind;
    private final boolean positionIndependent;
    private final long entry;
    private final List<Segment> segments;
    private final long lowest;
    private final long end;
    private final long phdrAddress;
    private final int phentsize;
    private final int phnum;

    private ElfImage(String name, Kind kind, boolean positionIndependent, long entry, List<Segment> segments,
            long phdrAddress, int phentsize, int phnum) {
        this.name = name;
        this.kind = kind;
        this.positionIndependent = positionIndependent;
        this.entry = entry;
        this.phdrAddress = phdrAddress;
        this.phentsize = phentsize;
        this.phnum = phnum;
        this.segments = List.copyOf(segments);
        this.lowest = segments.stream().mapToLong(Segment::vaddr).min().orElseThrow();
        this.end = segments.stream().mapToLong(s -> s.vaddr() + s.memSize()).max().orElseThrow();
    }

    public static ElfImage read(Path path) {
        try {
            long size = Files.size(path);
            if (size > MAX_FILE_SIZE) {
                throw new InvalidGuestImageException(path + ": " + size + " bytes is larger than the "
                        + MAX_FILE_SIZE + " bytes a guest image may have");
            }
            return parse(path.toString(), Files.readAllBytes(path));
        } catch (IOException e) {
            throw new InvalidGuestImageException("cannot read guest image " + path + ": " + e.getMessage(), e);
        }
    }

    public static ElfImage parse(String name, byte[] file) {
        ByteBuffer b = ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN);
        if (file.length < 64 || b.getInt(0) != 0x464c457f) {
            throw new InvalidGuestImageException(name + ": not an ELF file");
        }
        if (file[4] == 1) {
            throw new InvalidGuestImageException(name + ": a 32-bit ELF (ELFCLASS32), not a 64-bit x86-64 program;"
                    + " vmfork runs static x86-64 binaries");
        }
        if (file[4] != EI_CLASS_64 || file[5] != EI_DATA_LE) {
            throw new InvalidGuestImageException(name + ": not a 64-bit little-endian ELF (class "
                    + file[4] + ", data " + file[5] + ")");
        }
        int type = b.getShort(16) & 0xffff;
        int machine = b.getShort(18) & 0xffff;
        if (machine != EM_X86_64) {
            throw new InvalidGuestImageException(name + ": ELF machine " + machine + " is not x86-64 (62);"
                    + " vmfork runs static x86-64 binaries");
        }
        if (type != ET_EXEC && type != ET_DYN) {
            throw new InvalidGuestImageException(name + ": ELF type " + type + " is not an executable");
        }
        long entry = b.getLong(24);
        long phoff = b.getLong(32);
        int phentsize = b.getShort(54) & 0xffff;
        int phnum = b.getShort(56) & 0xffff;
        if (phnum == 0 || phnum > MAX_SEGMENTS || phentsize < 56 || phoff < 0
                || phoff + (long) phnum * phentsize > file.length) {
            throw new InvalidGuestImageException(name + ": program header table out of bounds");
        }
        Kind kind = hasGuestNote(b, file, phoff, phentsize, phnum) ? Kind.SDK : Kind.LINUX;
        if (kind == Kind.SDK && type == ET_DYN) {
            throw new InvalidGuestImageException(name + ": position-independent or dynamic ELF; "
                    + "a vmfork guest is a static executable (link with the SDK's guest.ld, -static -no-pie)");
        }
        List<Segment> segments = new ArrayList<>();
        long phdrAddress = -1;
        for (int i = 0; i < phnum; i++) {
            int ph = (int) (phoff + (long) i * phentsize);
            int ptype = b.getInt(ph);
            if (ptype == PT_INTERP) {
                throw new InvalidGuestImageException(name + ": dynamically linked (it names a program interpreter,"
                        + " PT_INTERP): vmfork runs static binaries (link with -static or -static-pie)");
            }
            if (ptype == PT_DYNAMIC && kind == Kind.SDK) {
                throw new InvalidGuestImageException(name + ": dynamically linked; a vmfork guest is static");
            }
            if (ptype == PT_PHDR) {
                phdrAddress = b.getLong(ph + 16);
            }
            if (ptype != PT_LOAD) {
                continue;
            }
            long offset = b.getLong(ph + 8);
            long vaddr = b.getLong(ph + 16);
            long filesz = b.getLong(ph + 32);
            long memsz = b.getLong(ph + 40);
            if (filesz < 0 || memsz < 0 || filesz > memsz || offset < 0 || offset > file.length
                    || filesz > file.length - offset || vaddr < 0 || vaddr + memsz < vaddr) {
                throw new InvalidGuestImageException(name + ": PT_LOAD segment " + i + " is malformed");
            }
            if (memsz == 0) {
                continue;
            }
            if (phdrAddress < 0 && phoff >= offset && phoff + (long) phnum * phentsize <= offset + filesz) {
                phdrAddress = vaddr + (phoff - offset); // no PT_PHDR: where the loaded file holds the table
            }
            byte[] data = new byte[(int) filesz];
            System.arraycopy(file, (int) offset, data, 0, (int) filesz);
            segments.add(new Segment(vaddr, data, memsz));
        }
        if (segments.isEmpty()) {
            throw new InvalidGuestImageException(name + ": no loadable segment");
        }
        boolean entryLoaded = segments.stream().anyMatch(s -> entry >= s.vaddr() && entry < s.vaddr() + s.memSize());
        if (!entryLoaded) {
            throw new InvalidGuestImageException(name + ": entry point 0x" + Long.toHexString(entry)
                    + " is outside every loadable segment");
        }
        return new ElfImage(name, kind, type == ET_DYN, entry, segments, phdrAddress, phentsize, phnum);
    }

    /** Whether a PT_NOTE segment holds the vmfork guest note (owner "vmfork", type {@link #NOTE_GUEST}). */
    private static boolean hasGuestNote(ByteBuffer b, byte[] file, long phoff, int phentsize, int phnum) {
        for (int i = 0; i < phnum; i++) {
            int ph = (int) (phoff + (long) i * phentsize);
            if (b.getInt(ph) != PT_NOTE) {
                continue;
            }
            long offset = b.getLong(ph + 8);
            long filesz = b.getLong(ph + 32);
            if (offset < 0 || filesz < 0 || offset > file.length || filesz > file.length - offset) {
                continue;
            }
            long at = offset;
            long endAt = offset + filesz;
            while (at + 12 <= endAt) {
                long namesz = b.getInt((int) at) & 0xffffffffL;
                long descsz = b.getInt((int) at + 4) & 0xffffffffL;
                int ntype = b.getInt((int) at + 8);
                long nameAt = at + 12;
                long descAt = nameAt + ((namesz + 3) & ~3L);
                long next = descAt + ((descsz + 3) & ~3L);
                if (next > endAt) {
                    break;
                }
                if (ntype == NOTE_GUEST && namesz == NOTE_OWNER.length && java.util.Arrays.equals(file, (int) nameAt,
                        (int) nameAt + NOTE_OWNER.length, NOTE_OWNER, 0, NOTE_OWNER.length)) {
                    return true;
                }
                at = next;
            }
        }
        return false;
    }

    public String name() {
        return name;
    }

    public long entry() {
        return entry;
    }

    /** Whether the VMM runs it as an SDK guest or as a Linux program. */
    public Kind kind() {
        return kind;
    }

    /** An ET_DYN (static PIE) image: its addresses are relative to a load base the loader picks. */
    public boolean positionIndependent() {
        return positionIndependent;
    }

    /** Link-time address of the program header table in the loaded image (AT_PHDR before the load base), or -1. */
    public long phdrAddress() {
        return phdrAddress;
    }

    public int phentsize() {
        return phentsize;
    }

    public int phnum() {
        return phnum;
    }

    public List<Segment> segments() {
        return segments;
    }

    /** Lowest guest address the image occupies. */
    public long lowestAddress() {
        return lowest;
    }

    /** One past the highest guest address the image occupies (bss included). */
    public long endAddress() {
        return end;
    }
}
