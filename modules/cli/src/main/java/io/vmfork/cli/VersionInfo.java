package io.vmfork.cli;

import io.vmfork.vmm.platform.HostPlatforms;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import picocli.CommandLine;

/**
 * {@code vmfork --version}: the version and the commit of the build (build.properties,
 * written by the cli module's build with git describe), and the platforms this host
 * offers, probed without booting a VM: whether the KVM device opens read-write, and
 * whether the process platform's self-test (a confined process traced and ended) passes.
 */
final class VersionInfo implements CommandLine.IVersionProvider {
    @Override
    public String[] getVersion() {
        Properties build = new Properties();
        try (InputStream in = VersionInfo.class.getResourceAsStream("build.properties")) {
            if (in != null) {
                build.load(in);
            }
        } catch (IOException e) {
            // Reported as unknown below.
        }
        List<String> lines = new ArrayList<>();
        lines.add("vmfork " + build.getProperty("version", "unknown") + " (commit "
                + build.getProperty("commit", "unknown") + ")");
        lines.add("Java " + System.getProperty("java.version") + " (" + System.getProperty("java.vm.name") + "), "
                + System.getProperty("os.name") + " " + System.getProperty("os.version") + " "
                + System.getProperty("os.arch"));
        String kvm = HostPlatforms.kvmUnusableReason(HostPlatforms.DEFAULT_KVM_DEVICE);
        lines.add("platform kvm: " + (kvm == null ? "usable (" + HostPlatforms.DEFAULT_KVM_DEVICE
                + " opens read-write)" : "not usable: " + kvm));
        String process;
        try {
            io.vmfork.vmm.platform.process.ProcessPlatform.check();
            process = "usable";
        } catch (RuntimeException | LinkageError e) {
            process = "not usable: " + e.getMessage();
        }
        lines.add("platform process: " + process);
        return lines.toArray(String[]::new);
    }
}
