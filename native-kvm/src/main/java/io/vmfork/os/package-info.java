/**
 * Plain OS wrappers, used by the KVM bindings ({@code io.vmfork.kvm}), the process
 * platform's ({@code io.vmfork.procvm}) and the VMM alike; nothing here is KVM's. One native
 * boundary per library: libc is {@link LibC}, and the host helper library
 * (libvmforkhost.so) is loaded once by {@link HostLibrary}, each of its bindings a class of
 * one concern ({@link HostHelper}: the host CPU as CPL3 sees it and userfaultfd write
 * protection; {@link Processes}: other processes' memory and ends). Every call is wrapped once
 * by a method that throws {@link NativeCallException} naming the call and its {@link Errno}.
 * Host memory: {@link Memfd} and {@link Mapping}. Nothing here depends on another package of
 * this project.
 */
package io.vmfork.os;
