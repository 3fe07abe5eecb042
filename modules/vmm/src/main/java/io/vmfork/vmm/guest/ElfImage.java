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
 * loaded into any number of VMs. Only what the loader needs is kept: the PT_LOAD
 * segments and the entry point.
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
    private static final int MAX_SEGMENTS = 64;
    /** Guest programs are small; a larger file is refused before it is read. */
    public static final long MAX_FILE_SIZE = 256L << 20;

    /** One PT_LOAD segment: file bytes at {@code vaddr}, then zeros up to {@code memSize}. */
    public record Segment(long vaddr, byte[] data, long memSize) {
    }

    private final String name;
    private final long entry;
    private final List<Segment> segments;
    private final long lowest;
    private final long end;

    private ElfImage(String name, long entry, List<Segment> segments) {
        this.name = name;
        this.entry = entry;
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
        if (file[4] != EI_CLASS_64 || file[5] != EI_DATA_LE) {
            throw new InvalidGuestImageException(name + ": not a 64-bit little-endian ELF (class "
                    + file[4] + ", data " + file[5] + ")");
        }
        int type = b.getShort(16) & 0xffff;
        int machine = b.getShort(18) & 0xffff;
        if (machine != EM_X86_64) {
            throw new InvalidGuestImageException(name + ": ELF machine " + machine + " is not x86-64 (62)");
        }
        if (type == ET_DYN) {
            throw new InvalidGuestImageException(name + ": position-independent or dynamic ELF; "
                    + "a vmfork guest is a static executable (link with the SDK's guest.ld, -static -no-pie)");
        }
        if (type != ET_EXEC) {
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
        List<Segment> segments = new ArrayList<>();
        for (int i = 0; i < phnum; i++) {
            int ph = (int) (phoff + (long) i * phentsize);
            int ptype = b.getInt(ph);
            if (ptype == PT_INTERP || ptype == PT_DYNAMIC) {
                throw new InvalidGuestImageException(name + ": dynamically linked; a vmfork guest is static");
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
        return new ElfImage(name, entry, segments);
    }

    public String name() {
        return name;
    }

    public long entry() {
        return entry;
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
