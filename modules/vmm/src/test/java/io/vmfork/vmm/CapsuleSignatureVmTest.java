package io.vmfork.vmm;

import static io.vmfork.vmm.CapsuleSurgery.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.ByteString;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.vmm.capsule.CapsuleKeys;
import io.vmfork.vmm.capsule.CapsuleSignatureException;
import io.vmfork.vmm.capsule.CapsuleSigner;
import io.vmfork.vmm.capsule.TrustedSigners;
import io.vmfork.vmm.guest.Guests;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.security.KeyPair;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * A real guest's capsule, signed by the VMM that wrote it, restores where its key is
 * trusted; where a signer is required, an unsigned, foreign, damaged-signature or
 * altered-and-rehashed capsule is refused before any VM exists, leaving nothing behind.
 */
class CapsuleSignatureVmTest extends VmmTestBase {
    private static final long MEMORY = 16L << 20;
    private static final KeyPair NODE = CapsuleKeys.generate();
    private static final KeyPair OTHER = CapsuleKeys.generate();
    private static final TrustedSigners TRUST_NODE = TrustedSigners.of(List.of(NODE.getPublic()));
    private static byte[] signed, unsigned, byOther;

    @BeforeAll
    static void captureAGuest() throws Exception {
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        original.ready().get(30, TimeUnit.SECONDS);
        SnapshotContractTest.idle(original);
        try (VirtualMachine.Snapshot s = original.snapshot()) {
            signed = capsule(s, CapsuleSigner.of(NODE));
            byOther = capsule(s, CapsuleSigner.of(OTHER));
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            vmm.writeCapsule(s, out);
            unsigned = out.toByteArray();
        }
        original.stop();
        original.awaitTermination(VmmTesting.TIMEOUT);
    }

    private static byte[] capsule(VirtualMachine.Snapshot s, CapsuleSigner signer) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        vmm.writeCapsule(s, out, signer);
        return out.toByteArray();
    }

    private static void restoresAndAnswers(byte[] capsule, TrustedSigners signers) throws Exception {
        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE, signers);
        assertTrue(ForkTest.ask(clone, "sum").startsWith("sum="));
        clone.stop();
        clone.awaitTermination(VmmTesting.TIMEOUT);
    }

    private static CapsuleSignatureException refused(byte[] capsule, CapsuleSignatureException.Reason reason)
            throws Exception {
        Resources before = Resources.of(vmm);
        int vms = vmm.vms().size();
        CapsuleSignatureException e = assertThrows(CapsuleSignatureException.class,
                () -> vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE, TRUST_NODE));
        assertEquals(reason, e.reason(), e.getMessage());
        assertNoVmAndNoLeak(vmm, before, vms);
        return e;
    }

    @Test
    void aSignedCapsuleRestoresWithTheRightKey() throws Exception {
        restoresAndAnswers(signed, TRUST_NODE);
        restoresAndAnswers(signed, TrustedSigners.none());
    }

    @Test
    void anUnsignedCapsuleIsRefusedWhereASignerIsRequiredAndRestoresWhereNone() throws Exception {
        CapsuleSignatureException e = refused(unsigned, CapsuleSignatureException.Reason.UNSIGNED);
        assertTrue(e.getMessage().contains("is not signed"), e.getMessage());
        restoresAndAnswers(unsigned, TrustedSigners.none());
    }

    @Test
    void aCapsuleSignedByAnotherKeyIsRefused() throws Exception {
        CapsuleSignatureException e = refused(byOther, CapsuleSignatureException.Reason.UNTRUSTED_SIGNER);
        assertTrue(e.getMessage().contains(CapsuleKeys.fingerprint(OTHER.getPublic())), e.getMessage());
    }

    @Test
    void aFlippedByteInTheSignatureIsRefused() throws Exception {
        byte[] bad = signed.clone();
        bad[bad.length - 10] ^= 0x20; // inside the 64-byte signature, the capsule's last bytes
        refused(bad, CapsuleSignatureException.Reason.BAD_SIGNATURE);
    }

    @Test
    void alteredMemoryWithARecomputedDigestIsRefused() throws Exception {
        List<CapsuleFrame> f = frames(signed);
        CapsuleFrame sig = f.remove(f.size() - 1);
        int last = f.size() - 2; // the last chunk: guest memory above the VMM's area
        MemoryChunk c = f.get(last).getChunk();
        byte[] data = c.getData().toByteArray();
        data[data.length - 1] ^= 0x01;
        CRC32C crc = new CRC32C();
        crc.update(data);
        f.set(last, CapsuleFrame.newBuilder().setChunk(c.toBuilder().setData(ByteString.copyFrom(data))
                .setCrc32C((int) crc.getValue())).build());
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(assemble(f));
        sig.writeDelimitedTo(out);
        refused(out.toByteArray(), CapsuleSignatureException.Reason.BAD_SIGNATURE);
        // Re-signed by nobody: signature and flag removed.
        List<CapsuleFrame> g = new ArrayList<>(f);
        g.set(0, CapsuleFrame.newBuilder().setHeader(f.get(0).getHeader().toBuilder()
                .setFlags(f.get(0).getHeader().getFlags() & ~io.vmfork.vmm.capsule.CapsuleFormat.FLAG_SIGNED))
                .build());
        refused(assemble(g), CapsuleSignatureException.Reason.UNSIGNED);
    }
}
