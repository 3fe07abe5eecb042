package io.vmfork.vmm.linux;

/** The errno values the served system calls answer (asm-generic/errno-base.h, errno.h), returned negated. */
final class LinuxErrno {
    static final long EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EBADF = 9, EAGAIN = 11, ENOMEM = 12,
            EACCES = 13, EFAULT = 14, EINVAL = 22, ENOTTY = 25, ESPIPE = 29, ERANGE = 34, ENOSYS = 38;

    private LinuxErrno() {
    }

    /** The return value for {@code errno}. */
    static long err(long errno) {
        return -errno;
    }
}
