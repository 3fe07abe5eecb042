package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import io.vmfork.vmm.linux.ProcessStart;
import io.vmfork.vmm.linux.ProgramArgs;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/**
 * Linux guests (docs/linux.md): a plain C program, static with musl and with glibc
 * (native-kvm linux/probe.c), starts with its argv, environment and auxiliary vector,
 * answers requests over stdin and stdout, gets EFAULT and ENOSYS where due, and forks from
 * outside into copies that keep its state and diverge. On the process platform only in this
 * version: on KVM each test is skipped, counted, with the reason.
 */
class LinuxGuestTest extends VmmTestBase {
    private static final long MEMORY = 64L << 20;

    private static void assumeProcessPlatform() {
        assumeTrue(vmm.platform().isProcess(),
                "Linux guests run on the process platform only in this version (KVM's syscall entry: docs/linux.md)");
    }

    static String ask(VirtualMachine vm, String request) throws Exception {
        return new String(vm.channel().request(request.getBytes(StandardCharsets.UTF_8)).get(30, TimeUnit.SECONDS),
                StandardCharsets.UTF_8);
    }

    private static VirtualMachine launch(String libc, List<String> argv, List<String> env) throws Exception {
        assumeProcessPlatform();
        ElfImage image = Guests.shipped("linux-probe-" + libc);
        assertEquals(ElfImage.Kind.LINUX, image.kind());
        VirtualMachine vm = vmm.launch(VmSpec.of(image, MEMORY).withProgram(new ProgramArgs(argv, env)));
        vm.ready().get(30, TimeUnit.SECONDS);
        assertTrue(vm.isLinux());
        return vm;
    }

    @ParameterizedTest
    @ValueSource(strings = {"musl", "glibc"})
    void startsWithItsArgvEnvironmentAndAuxiliaryVector(String libc) throws Exception {
        VirtualMachine vm = launch(libc, List.of("/bin/probe", "one", "two words"), List.of("GREETING=hi", "EMPTY="));
        try {
            assertTrue(vm.console().text().contains("probe: up"), vm.console().text());
            assertEquals("argc=3 /bin/probe|one|two words", ask(vm, "argv"));
            assertEquals("envc=2 GREETING=hi|EMPTY=", ask(vm, "env"));
            String auxv = ask(vm, "auxv");
            assertTrue(auxv.startsWith("phdr=0x400040 phent=56 phnum="), auxv);
            assertTrue(auxv.contains(" pagesz=4096 "), auxv);
            assertTrue(auxv.contains(" uid=" + ProcessStart.UID + " euid=" + ProcessStart.UID + " gid="
                    + ProcessStart.GID + " egid=" + ProcessStart.GID + " secure=0 execfn=/bin/probe random="), auxv);
            Matcher entry = Pattern.compile("entry=(0x[0-9a-f]+)").matcher(auxv);
            assertTrue(entry.find(), auxv);
            assertEquals(Guests.shipped("linux-probe-" + libc).entry(), Long.decode(entry.group(1)));
            String random = auxv.substring(auxv.indexOf("random=") + 7);
            assertEquals(32, random.length(), auxv);
            assertNotEquals("00000000000000000000000000000000", random);
            assertEquals("sysname=Linux nodename=vmfork release=6.1.0-vmfork machine=x86_64", ask(vm, "uname"));
            assertEquals("pid=1 ppid=0 tid=1 uid=1000 euid=1000 gid=1000 egid=1000", ask(vm, "ids"));
            assertTrue(ask(vm, "time").startsWith("slept_ns_ok=1 realtime="));
            assertNotEquals(ask(vm, "rand"), ask(vm, "rand"));
            assertEquals("ok sum=" + (0xab * ((300000 + 4095) / 4096)) + " zero=1 huge=ENOMEM", ask(vm, "malloc 300000"));
            assertEquals("ok sum=" + (0xab * ((5000000 + 4095) / 4096)) + " zero=1 huge=ENOMEM",
                    ask(vm, "malloc 5000000"));
            assertEquals("grow=1 shrink=1 huge=1", ask(vm, "brk"));
            assertEquals("ok", ask(vm, "set colour blue"));
            assertEquals("blue", ask(vm, "get colour"));
            assertEquals("bye? no: ? bye", "bye? no: " + ask(vm, "bye"));
            vm.channel().request("exit 7".getBytes(StandardCharsets.UTF_8));
            assertEquals(VmExit.exited(7), vm.awaitTermination(VmmTesting.TIMEOUT));
        } finally {
            vm.stop();
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"musl", "glibc"})
    void badPointersGetEfaultAndUnknownCallsEnosysCounted(String libc) throws Exception {
        VirtualMachine vm = launch(libc, List.of("probe"), List.of());
        try {
            assertEquals("write=-14 read=-14 clock_gettime=-14 uname=-14 getrandom=-14", ask(vm, "efault"));
            assertEquals("inotify_init1=-38,-38 rseq=-38", ask(vm, "enosys"));
            Map<String, Long> unserved = vm.unservedSyscalls();
            assertEquals(2L, unserved.get("inotify_init1"), unserved.toString());
            assertFalse(unserved.containsKey("rseq"), "rseq answers ENOSYS by design: " + unserved);
            assertEquals("envc=0", ask(vm, "env"));
            assertEquals(VmState.RUNNING, vm.state());
        } finally {
            vm.stop();
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"musl", "glibc"})
    void endOfInputEndsTheProgram(String libc) throws Exception {
        VirtualMachine vm = launch(libc, List.of("probe"), List.of());
        assertEquals("ok", ask(vm, "set a 1"));
        vm.channel().close();
        assertEquals(VmExit.exited(0), vm.awaitTermination(VmmTesting.TIMEOUT));
        assertTrue(vm.console().text().contains("probe: end of input"), vm.console().text());
    }

    @ParameterizedTest
    @ValueSource(strings = {"musl", "glibc"})
    void anExternalForkOfAReadyProgramGivesCopiesThatKeepItsStateAndDiverge(String libc) throws Exception {
        VirtualMachine parent = launch(libc, List.of("probe"), List.of("ROLE=parent"));
        try {
            assertEquals("ok", ask(parent, "set colour blue"));
            ask(parent, "malloc 2000000"); // the memory map changed before the fork
            VirtualMachine.ForkResult fork = parent.fork(2, 0);
            assertEquals(List.of(), fork.errors());
            assertEquals(2, fork.children().size());
            VirtualMachine a = fork.children().get(0);
            VirtualMachine b = fork.children().get(1);
            assertTrue(a.isLinux() && b.isLinux());
            assertEquals("blue", ask(a, "get colour"));
            assertEquals("blue", ask(b, "get colour"));
            assertEquals("ok", ask(a, "set colour red"));
            assertEquals("ok", ask(b, "set colour green"));
            assertEquals("ok", ask(parent, "set colour black"));
            assertEquals("red", ask(a, "get colour"));
            assertEquals("green", ask(b, "get colour"));
            assertEquals("black", ask(parent, "get colour"));
            assertEquals("envc=1 ROLE=parent", ask(a, "env"));
            assertNotEquals(ask(a, "rand"), ask(b, "rand"));
            for (VirtualMachine vm : List.of(a, b, parent)) {
                assertTrue(ask(vm, "malloc 3000000").startsWith("ok sum="), "memory still works in " + vm);
            }
            a.channel().request("exit 3".getBytes(StandardCharsets.UTF_8));
            assertEquals(VmExit.exited(3), a.awaitTermination(VmmTesting.TIMEOUT));
            assertEquals("green", ask(b, "get colour"));
            assertEquals("black", ask(parent, "get colour"));
            b.stop();
        } finally {
            parent.stop();
        }
    }

    @Test
    void aStaticLuaWorkerWarmsUpAnswersRequestsAndForks() throws Exception {
        assumeProcessPlatform();
        ElfImage lua = Guests.shipped("lua-worker");
        assertEquals(ElfImage.Kind.LINUX, lua.kind());
        VirtualMachine parent = vmm.launch(VmSpec.of(lua, MEMORY).withProgram(ProgramArgs.of("/lua-worker")));
        try {
            parent.ready().get(60, TimeUnit.SECONDS);
            assertTrue(parent.console().text().contains("lua-worker: ready (200000 keys)"), parent.console().text());
            assertEquals("200000", ask(parent, "count"));
            String sum = ask(parent, "sum");
            String v7 = ask(parent, "get 7");
            assertEquals("miss", ask(parent, "get 200000"));
            assertEquals("ok", ask(parent, "set 7 parent"));
            VirtualMachine.ForkResult fork = parent.fork(2, 0);
            assertEquals(List.of(), fork.errors());
            VirtualMachine a = fork.children().get(0);
            VirtualMachine b = fork.children().get(1);
            assertEquals("parent", ask(a, "get 7"));
            assertEquals("ok", ask(a, "set 7 " + v7));
            assertEquals(sum, ask(a, "sum"), "the child restored key 7: its whole table is the warm one");
            assertEquals("ok", ask(b, "set 8 b"));
            assertEquals("parent", ask(b, "get 7"));
            assertEquals("parent", ask(parent, "get 7"));
            assertNotEquals("b", ask(parent, "get 8"));
            assertNotEquals("b", ask(a, "get 8"));
            assertEquals(Map.of(), a.unservedSyscalls());
            a.channel().request("exit 4".getBytes(StandardCharsets.UTF_8));
            assertEquals(VmExit.exited(4), a.awaitTermination(VmmTesting.TIMEOUT));
            b.stop();
        } finally {
            parent.stop();
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"musl", "glibc"})
    void filesAreReadOnlyAndNeverReachOutsideTheRoot(String libc, @org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        assumeProcessPlatform();
        java.nio.file.Path root = dir.resolve("root");
        java.nio.file.Files.createDirectories(root.resolve("etc"));
        java.nio.file.Files.createDirectories(root.resolve("data/sub"));
        java.nio.file.Files.writeString(root.resolve("etc/greeting"), "hello from the root\nsecond line\n");
        java.nio.file.Files.writeString(dir.resolve("outside"), "the host's\n");
        java.nio.file.Files.createSymbolicLink(root.resolve("relative"), java.nio.file.Path.of("etc/greeting"));
        java.nio.file.Files.createSymbolicLink(root.resolve("absolute"), java.nio.file.Path.of("/etc/greeting"));
        java.nio.file.Files.createSymbolicLink(root.resolve("escape"), dir.resolve("outside"));
        java.nio.file.Files.createSymbolicLink(root.resolve("up"), java.nio.file.Path.of("../outside"));
        java.nio.file.Files.createSymbolicLink(root.resolve("loop"), java.nio.file.Path.of("loop"));
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("linux-probe-" + libc), MEMORY)
                .withProgram(new ProgramArgs(List.of("/probe"), List.of(), root)));
        try {
            vm.ready().get(30, TimeUnit.SECONDS);
            String greeting = "bytes=32 first=hello from the root";
            assertEquals(greeting, ask(vm, "cat /etc/greeting"));
            assertEquals(greeting, ask(vm, "cat etc/../etc/./greeting"));
            assertEquals(greeting, ask(vm, "cat /relative"));
            assertEquals(greeting, ask(vm, "cat /absolute"), "an absolute link starts at the root");
            assertEquals(greeting, ask(vm, "cat /../../../../etc/greeting"), ".. stops at the root");
            assertEquals("errno=2", ask(vm, "cat /escape"), "a link to the host's file resolves inside the root");
            assertEquals("errno=2", ask(vm, "cat /up"));
            assertEquals("errno=2", ask(vm, "cat /proc/1/environ"));
            assertEquals("errno=2", ask(vm, "cat /etc/passwd"));
            assertEquals("errno=40", ask(vm, "cat /loop"));
            assertEquals("errno=30", ask(vm, "wopen /etc/greeting"));
            assertEquals("errno=30", ask(vm, "wopen /tmp/new"));
            assertEquals(".,..,absolute,data,escape,etc,loop,relative,up", ask(vm, "ls /"));
            assertEquals(".,..,greeting", ask(vm, "ls /absolute/.."), "a link's .. is its target's directory's");
            assertEquals("errno=20", ask(vm, "ls /etc/greeting"));
            assertEquals("chdir=0 errno=0 cwd=/data/sub", ask(vm, "cd /data/sub"));
            assertEquals(greeting, ask(vm, "cat ../../etc/greeting"));
            assertEquals("chdir=-1 errno=20 cwd=/data/sub", ask(vm, "cd /etc/greeting"));
            VirtualMachine child = vm.fork(1, 0).children().get(0);
            assertEquals(greeting, ask(child, "cat ../../relative"), "a fork keeps the root and the working directory");
            child.stop();
        } finally {
            vm.stop();
        }
    }

    @Test
    void onKvmALinuxProgramIsRefusedWithTheReason() {
        assumeTrue(!vmm.platform().isProcess(), "a process-platform VMM runs Linux programs");
        LaunchException e = assertThrows(LaunchException.class,
                () -> vmm.launch(VmSpec.of(Guests.shipped("linux-probe-musl"), MEMORY)));
        assertTrue(e.getMessage().contains("process platform only"), e.getMessage());
    }

    @Test
    void dynamicAnd32BitProgramsAreRefusedWithTheirReasons() {
        InvalidGuestImageException dynamic = assertThrows(InvalidGuestImageException.class,
                () -> Guests.shipped("linux-probe-dynamic"));
        assertTrue(dynamic.getMessage().contains("dynamically linked") && dynamic.getMessage().contains("static"),
                dynamic.getMessage());
        byte[] code = TestElf.portAccess(0x7f0, true);
        InvalidGuestImageException elf32 = assertThrows(InvalidGuestImageException.class,
                () -> ElfImage.parse("t32", TestElf.linuxExecutable(code, TestElf.BASE, code.length, 62, 2, 1)));
        assertTrue(elf32.getMessage().contains("32-bit"), elf32.getMessage());
        InvalidGuestImageException arm = assertThrows(InvalidGuestImageException.class,
                () -> ElfImage.parse("arm", TestElf.linuxExecutable(code, TestElf.BASE, code.length, 183, 2, 2)));
        assertTrue(arm.getMessage().contains("not x86-64"), arm.getMessage());
    }

    @Test
    void theKindIsToldByTheGuestNote() {
        assertEquals(ElfImage.Kind.SDK, Guests.shipped("hello").kind());
        assertEquals(ElfImage.Kind.LINUX, Guests.shipped("linux-probe-musl").kind());
        assertEquals(ElfImage.Kind.LINUX, Guests.shipped("linux-probe-glibc").kind());
        byte[] code = TestElf.portAccess(0x7f0, true);
        assertEquals(ElfImage.Kind.SDK, ElfImage.parse("n", TestElf.executable(code)).kind());
        assertEquals(ElfImage.Kind.LINUX,
                ElfImage.parse("l", TestElf.linuxExecutable(code, TestElf.BASE, code.length, 62, 2, 2)).kind());
    }
}
