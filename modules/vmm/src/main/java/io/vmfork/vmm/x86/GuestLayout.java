package io.vmfork.vmm.x86;

/**
 * Guest-physical memory layout of a vmfork guest (docs/hypercalls.md, "Memory layout").
 * Guest virtual == guest physical: the VMM identity-maps all RAM.
 *
 * <pre>
 * 0x000000  page 0: read-only (null writes fault; PVM needs it mapped, see PageTables)
 * 0x001000  PML4          read-only to the guest
 * 0x002000  PDPT          read-only
 * 0x003000  PT of the first 2 MiB (4 KiB pages)   read-only
 * 0x004000  PDs, one per GiB of RAM, up to 64    read-only
 * 0x100000  boot info     read-only
 * 0x200000  lowest address a guest image may load at; all RAM above is user read-write
 * ...       image, heap
 * size-stack .. size   the stack, RSP starts at size
 * </pre>
 */
public final class GuestLayout {
    public static final long PAGE = 4096;
    public static final long LARGE_PAGE = 2L << 20;
    public static final long GIB = 1L << 30;

    public static final long PML4 = 0x1000;
    public static final long PDPT = 0x2000;
    public static final long LOW_PT = 0x3000;
    public static final long PD_BASE = 0x4000;
    public static final int MAX_PDS = 64;
    public static final long BOOT_INFO = 0x100000;
    /** Below this, RAM is VMM-owned: hypercalls may read it but never write it. */
    public static final long IMAGE_MIN = 0x200000;

    /** The largest RAM the page-table area can map. */
    public static final long MAX_MEMORY = MAX_PDS * GIB;

    private GuestLayout() {
    }
}
