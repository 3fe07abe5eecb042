package io.vmfork.vmm;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** Test classes that share one real VMM for all their tests. */
abstract class VmmTestBase {
    static Vmm vmm;

    @BeforeAll
    static void openVmm() {
        vmm = VmmTesting.openVmm();
    }

    @AfterAll
    static void closeVmm() {
        vmm.close();
    }
}
