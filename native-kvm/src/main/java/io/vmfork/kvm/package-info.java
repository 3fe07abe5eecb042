/**
 * The KVM bindings: the {@code /dev/kvm} handle ({@link Kvm}), a VM ({@link KvmVm}), a vCPU
 * ({@link KvmVcpu}, {@link KvmRun}), their ioctl numbers ({@link Ioctls}), and the vCPU kick
 * signal of the host helper library ({@link VcpuThreads}); the x86 structs, CPUID and MSRs
 * in {@code io.vmfork.kvm.x86}. Plain OS calls (libc, memfd, mappings) are
 * {@code io.vmfork.os}'s.
 */
package io.vmfork.kvm;
