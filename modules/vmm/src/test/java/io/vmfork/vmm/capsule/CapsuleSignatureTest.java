package io.vmfork.vmm.capsule;

import static io.vmfork.vmm.capsule.CapsuleFixtures.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.ByteString;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleSignature;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.proto.SignatureAlgorithm;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.capsule.CapsuleSignatureException.Reason;
import io.vmfork.vmm.state.MemorySource.Run;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPair;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Signed capsules (docs/capsule.md, "Signed capsules"): a reader that requires a trusted
 * signer takes a capsule signed by one of them and nothing else; a reader that requires none
 * takes signed and unsigned capsules alike.
 */
class CapsuleSignatureTest {
    private static final long SIZE = 1 * MIB;
    private static final KeyPair NODE = CapsuleKeys.generate();
    private static final KeyPair OTHER = CapsuleKeys.generate();
    private static final TrustedSigners TRUST_NODE = TrustedSigners.of(List.of(NODE.getPublic()));
    private static byte[] unsigned;
    private static byte[] signed;
    private static List<CapsuleFrame> signedFrames;

    @BeforeAll
    static void writeCapsules() throws Exception {
        SyntheticMemory mem = new SyntheticMemory(SIZE, List.of(new Run(0, 6 * PAGE), new Run(64 * PAGE, 5 * PAGE)),
                p -> p == 2);
        unsigned = write(state(SIZE, 1, CpuState.FpuFormat.FXSAVE), mem, limits());
        signed = writeSigned(state(SIZE, 1, CpuState.FpuFormat.FXSAVE), mem, CapsuleSigner.of(NODE));
        signedFrames = frames(signed);
    }

    private static byte[] writeSigned(io.vmfork.vmm.state.MachineState state, io.vmfork.vmm.state.MemorySource mem,
            CapsuleSigner signer) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleWriter.create(limits()).signedBy(signer).write(out, state, mem, HOST_ID, HOST_NAME, KVM_API);
        return out.toByteArray();
    }

    private static CapsuleContents readTrusting(byte[] capsule, TrustedSigners signers) throws Exception {
        return CapsuleReader.create(limits()).requireSignedBy(signers)
                .read(new ByteArrayInputStream(capsule), new PageSink());
    }

    private static CapsuleSignatureException refused(byte[] capsule, Reason reason, String... mentions) {
        CapsuleSignatureException e = assertThrows(CapsuleSignatureException.class,
                () -> readTrusting(capsule, TRUST_NODE));
        assertEquals(reason, e.reason(), e.getMessage());
        for (String m : mentions) {
            assertTrue(e.getMessage().contains(m), "'" + m + "' not in: " + e.getMessage());
        }
        assertFalse(e.getMessage().contains("\n"), "one line: " + e.getMessage());
        return e;
    }

    /** The signed capsule with its signature frame replaced (null: left off), digest recomputed over {@code body}. */
    private static byte[] reassemble(List<CapsuleFrame> body, CapsuleSignature signature) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(assemble(body));
        if (signature != null) {
            CapsuleFrame.newBuilder().setSignature(signature).build().writeDelimitedTo(out);
        }
        return out.toByteArray();
    }

    private static List<CapsuleFrame> body() {
        return new ArrayList<>(signedFrames.subList(0, signedFrames.size() - 1));
    }

    private static CapsuleSignature signature() {
        CapsuleFrame last = signedFrames.get(signedFrames.size() - 1);
        assertEquals(CapsuleFrame.KindCase.SIGNATURE, last.getKindCase());
        return last.getSignature();
    }

    @Test
    void aSignedCapsuleReadsWithItsSignersKeyAndWithoutAnyRequirement() throws Exception {
        CapsuleContents c = readTrusting(signed, TRUST_NODE);
        assertEquals(CapsuleFormat.FLAG_SIGNED, c.header().getFlags() & CapsuleFormat.FLAG_SIGNED);
        assertArrayEquals(NODE.getPublic().getEncoded(), signature().getPublicKey().toByteArray());
        readTrusting(signed, TrustedSigners.of(List.of(OTHER.getPublic(), NODE.getPublic())));
        read(signed, new PageSink(), limits(), null);
        // Signing adds the flag and one frame; everything else is the unsigned capsule's.
        assertEquals(frames(unsigned).size() + 1, signedFrames.size());
        assertEquals(0, CapsuleReader.create(limits()).read(new ByteArrayInputStream(unsigned), new PageSink())
                .header().getFlags() & CapsuleFormat.FLAG_SIGNED);
    }

    @Test
    void anUnsignedCapsuleIsRefusedWhereASignerIsRequiredAndReadWhereNone() throws Exception {
        refused(unsigned, Reason.UNSIGNED, "is not signed", "from " + HOST_NAME, CapsuleKeys.fingerprint(NODE.getPublic()));
        readTrusting(unsigned, TrustedSigners.none());
        read(unsigned, new PageSink(), limits(), null);
    }

    @Test
    void aCapsuleSignedByAnotherKeyIsRefused() throws Exception {
        byte[] byOther = writeSigned(state(SIZE, 1, CpuState.FpuFormat.FXSAVE),
                new SyntheticMemory(SIZE, List.of(new Run(0, 6 * PAGE)), p -> false), CapsuleSigner.of(OTHER));
        refused(byOther, Reason.UNTRUSTED_SIGNER, "signed by key " + CapsuleKeys.fingerprint(OTHER.getPublic()),
                "which is not its trusted signer " + CapsuleKeys.fingerprint(NODE.getPublic()));
        readTrusting(byOther, TrustedSigners.of(List.of(OTHER.getPublic())));
        // The other key's signature relabelled with the trusted key does not verify.
        CapsuleSignature relabelled = frames(byOther).get(frames(byOther).size() - 1).getSignature().toBuilder()
                .setPublicKey(ByteString.copyFrom(NODE.getPublic().getEncoded())).build();
        List<CapsuleFrame> f = frames(byOther);
        refused(reassemble(f.subList(0, f.size() - 1), relabelled), Reason.BAD_SIGNATURE, "does not verify");
    }

    @Test
    void aFlippedByteInTheSignatureIsRefused() throws Exception {
        int sigAt = signed.length - CapsuleKeys.SIGNATURE_BYTES;
        for (int i : new int[] {0, 17, 31, 32, 63}) {
            byte[] bad = signed.clone();
            bad[sigAt + i] ^= 0x01;
            refused(bad, Reason.BAD_SIGNATURE, "does not verify", CapsuleKeys.fingerprint(NODE.getPublic()));
            // Where no signer is required, the signature is not checked.
            readTrusting(bad, TrustedSigners.none());
        }
    }

    @Test
    void alteredMemoryWithARecomputedDigestIsRefused() throws Exception {
        List<CapsuleFrame> f = body();
        MemoryChunk c = f.get(2).getChunk();
        byte[] data = c.getData().toByteArray();
        data[100] ^= 0x5a;
        CRC32C crc = new CRC32C();
        crc.update(data);
        f.set(2, CapsuleFrame.newBuilder().setChunk(c.toBuilder().setData(ByteString.copyFrom(data))
                .setCrc32C((int) crc.getValue())).build());
        byte[] altered = reassemble(f, signature());
        read(altered, new PageSink(), limits(), null); // digest-valid: only the signature tells
        refused(altered, Reason.BAD_SIGNATURE, "does not verify", "changed after it was signed");
        // Re-signed by nobody: the signature left off, with or without the flag.
        CapsuleFormatException cut = assertThrows(CapsuleFormatException.class, () -> readTrusting(reassemble(f, null), TRUST_NODE));
        assertTrue(cut.getMessage().contains("truncated"), cut.getMessage());
        List<CapsuleFrame> g = new ArrayList<>(f);
        g.set(0, CapsuleFrame.newBuilder().setHeader(f.get(0).getHeader().toBuilder()
                .setFlags(f.get(0).getHeader().getFlags() & ~CapsuleFormat.FLAG_SIGNED)).build());
        refused(reassemble(g, null), Reason.UNSIGNED, "is not signed");
    }

    @Test
    void theHeaderCannotBeSwappedUnderASignature() throws Exception {
        List<CapsuleFrame> f = body();
        f.set(0, CapsuleFrame.newBuilder().setHeader(f.get(0).getHeader().toBuilder()
                .setSourceHostName("someone-else")).build());
        refused(reassemble(f, signature()), Reason.BAD_SIGNATURE, "someone-else", "does not verify");
    }

    @Test
    void theSignatureFrameIsWellFormedWhereverItIsRead() throws Exception {
        List<CapsuleFrame> f = body();
        int end = assemble(f).length;
        // Cut off whole, with the flag still set: a truncation, even where no signer is required.
        CapsuleFormatException cut = assertThrows(CapsuleFormatException.class,
                () -> read(Arrays.copyOf(signed, end), new PageSink(), limits(), null));
        assertTrue(cut.getMessage().contains("truncated"), cut.getMessage());
        // A signature frame without the flag is trailing bytes.
        List<CapsuleFrame> g = new ArrayList<>(f);
        g.set(0, CapsuleFrame.newBuilder().setHeader(f.get(0).getHeader().toBuilder()
                .setFlags(f.get(0).getHeader().getFlags() & ~CapsuleFormat.FLAG_SIGNED)).build());
        CapsuleFormatException extra = assertThrows(CapsuleFormatException.class,
                () -> read(reassemble(g, signature()), new PageSink(), limits(), null));
        assertTrue(extra.getMessage().contains("trailing bytes after the trailer"), extra.getMessage());
        for (CapsuleSignature bad : List.of(
                signature().toBuilder().setAlgorithm(SignatureAlgorithm.SIGNATURE_ALGORITHM_UNSPECIFIED).build(),
                signature().toBuilder().setSignature(signature().getSignature().substring(1)).build(),
                signature().toBuilder().setPublicKey(ByteString.EMPTY).build(),
                signature().toBuilder().setUnknownFields(com.google.protobuf.UnknownFieldSet.newBuilder()
                        .addField(9, com.google.protobuf.UnknownFieldSet.Field.newBuilder().addVarint(1).build())
                        .build()).build())) {
            CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                    () -> read(reassemble(f, bad), new PageSink(), limits(), null));
            assertTrue(e.getMessage().contains("(signature)"), e.getMessage());
        }
        // Nothing may follow the signature.
        byte[] more = Arrays.copyOf(signed, signed.length + 1);
        CapsuleFormatException after = assertThrows(CapsuleFormatException.class,
                () -> read(more, new PageSink(), limits(), null));
        assertTrue(after.getMessage().contains("trailing bytes after the signature"), after.getMessage());
    }

    @Test
    void aVersion3HeaderCannotClaimASignature() throws Exception {
        List<CapsuleFrame> f = body();
        f.set(0, CapsuleFrame.newBuilder().setHeader(f.get(0).getHeader().toBuilder().setFormatVersion(3)).build());
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> read(reassemble(f, signature()), new PageSink(), limits(), null));
        assertTrue(e.getMessage().contains("header flags 0x4 are unknown"), e.getMessage());
    }

    @Test
    void keyFilesRoundTripThroughPem(@TempDir Path dir) throws Exception {
        Path key = dir.resolve("k.key");
        Path pub = dir.resolve("k.pub");
        Files.writeString(key, CapsuleKeys.signingKeyPem(NODE));
        Files.writeString(pub, CapsuleKeys.publicKeyPem(NODE.getPublic()));
        assertEquals(CapsuleKeys.fingerprint(NODE.getPublic()), CapsuleSigner.load(key).fingerprint());
        TrustedSigners t = TrustedSigners.load(List.of(pub));
        assertEquals(1, t.size());
        byte[] c = writeSigned(state(SIZE, 1, CpuState.FpuFormat.FXSAVE),
                new SyntheticMemory(SIZE, List.of(new Run(0, 2 * PAGE)), p -> false), CapsuleSigner.load(key));
        readTrusting(c, t);
        // A private key without its public key, and a mismatched pair, are refused with the file's name.
        Path lone = dir.resolve("lone.key");
        Files.writeString(lone, CapsuleKeys.signingKeyPem(NODE).split("(?=-----BEGIN PUBLIC KEY)")[0]);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CapsuleSigner.load(lone));
        assertTrue(e.getMessage().contains("lone.key holds no PUBLIC KEY"), e.getMessage());
        Path mixed = dir.resolve("mixed.key");
        Files.writeString(mixed, CapsuleKeys.signingKeyPem(NODE).split("(?=-----BEGIN PUBLIC KEY)")[0]
                + CapsuleKeys.publicKeyPem(OTHER.getPublic()));
        e = assertThrows(IllegalArgumentException.class, () -> CapsuleSigner.load(mixed));
        assertTrue(e.getMessage().contains("is not the public key of its PRIVATE KEY"), e.getMessage());
        Path junk = dir.resolve("junk.pub");
        Files.writeString(junk, "hello\n");
        e = assertThrows(IllegalArgumentException.class, () -> TrustedSigners.load(List.of(junk)));
        assertTrue(e.getMessage().contains("junk.pub holds no PUBLIC KEY"), e.getMessage());
    }
}
