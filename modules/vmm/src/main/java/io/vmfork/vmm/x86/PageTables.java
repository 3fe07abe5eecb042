package io.vmfork.vmm.x86;

import io.vmfork.vmm.memory.GuestMemory;

/**
 * Builds the identity map of a guest's RAM: 4 KiB pages for the first 2 MiB (so that
 * the VMM area can be made read-only), 2 MiB pages above. Page 0 is mapped read-only
 * rather than left out: on PVM hosts the emulation of a CPL3 `out` touches linear
 * address 0, and the hypercall faults if nothing is mapped there (measured: a guest
 * with page 0 unmapped triple-faults on its first hypercall). Null writes still fault. Every
 * entry is user-accessible: the guest runs at CPL3. Accessed and dirty bits are preset so
 * the CPU never writes to the tables, which stay read-only to the guest.
 */
public final class PageTables {
    private static final long P = 1, RW = 1 << 1, US = 1 << 2, A = 1 << 5, D = 1 << 6, PS = 1 << 7;
    private static final long TABLE = P | RW | US | A;

    private PageTables() {
    }

    /** Where {@link #build(long, Writer)} puts the tables: a guest's RAM, or a copy of its low area. */
    @FunctionalInterface
    public interface Writer {
        void writeLong(long gpa, long value);
    }

    public static void build(GuestMemory mem) {
        build(mem.size(), mem::writeLong);
    }

    /** Writes the tables of a guest of {@code size} bytes; they lie below {@link GuestModel#PAGE_TABLES_END}. */
    public static void build(long size, Writer mem) {
        int gibs = (int) ((size + GuestLayout.GIB - 1) / GuestLayout.GIB);
        if (gibs > GuestLayout.MAX_PDS) {
            throw new IllegalArgumentException("guest RAM of " + size + " bytes exceeds the page-table area");
        }
        mem.writeLong(GuestLayout.PML4, GuestLayout.PDPT | TABLE);
        for (int g = 0; g < gibs; g++) {
            long pd = GuestLayout.PD_BASE + g * GuestLayout.PAGE;
            mem.writeLong(GuestLayout.PDPT + 8L * g, pd | TABLE);
        }
        // First 2 MiB through a 4 KiB page table.
        mem.writeLong(GuestLayout.PD_BASE, GuestLayout.LOW_PT | TABLE);
        for (long page = 0; page < 512; page++) {
            long addr = page * GuestLayout.PAGE;
            long flags = P | US | A | D;
            if (addr > GuestLayout.BOOT_INFO) {
                flags |= RW;
            }
            mem.writeLong(GuestLayout.LOW_PT + 8 * page, addr | flags);
        }
        // The rest through 2 MiB pages.
        for (long addr = GuestLayout.LARGE_PAGE; addr < size; addr += GuestLayout.LARGE_PAGE) {
            long index = addr / GuestLayout.LARGE_PAGE;
            mem.writeLong(GuestLayout.PD_BASE + 8 * index, addr | P | RW | US | A | D | PS);
        }
    }
}
