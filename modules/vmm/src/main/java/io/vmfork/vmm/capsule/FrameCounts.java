package io.vmfork.vmm.capsule;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.Descriptors.Descriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.WireFormat;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.proto.DeviceState;
import io.vmfork.proto.KvmCpuPart;
import io.vmfork.proto.MachineState;
import io.vmfork.proto.Sregs;
import io.vmfork.proto.VcpuState;
import java.io.IOException;
import java.util.HashMap;
import java.util.Map;
import java.util.function.Function;

/**
 * Counts the elements of every repeated field of a header or state frame, through the
 * schema's descriptors, before protobuf parses it: parsing allocates per element (an
 * empty CPUID entry is 2 bytes on the wire and ~100 on the heap), so a frame of millions
 * of empty entries must be refused by a scan that allocates nothing. Counts add up over
 * the whole frame (a repeated message field merges); fields of unknown number, which
 * protobuf keeps, are capped too. A frame the scan cannot follow is
 * left to the parser, which refuses it.
 */
final class FrameCounts {
    /** Most MSRs one vCPU state may list (GuestModel allows fewer; this only bounds the parse). */
    static final int MAX_MSRS_PER_VCPU = 64;
    /** Most elements of a repeated field without a cap of its own. */
    private static final int DEFAULT_CAP = 64;
    private static final int KVM_SREGS_INTERRUPT_WORDS = 4;
    /** Most fields of unknown number in one frame (a later release's additions). */
    static final int MAX_UNKNOWN_FIELDS = 1024;

    private final Map<FieldDescriptor, Long> caps = new HashMap<>();
    private final Map<FieldDescriptor, Long> counts = new HashMap<>();
    private final FieldDescriptor queued = DeviceState.getDescriptor().findFieldByName("queued_requests");
    private final int maxMessageBytes;
    private int unknownFields;
    private final Function<String, CapsuleFormatException> fail;

    private FrameCounts(CapsuleLimits limits, CapsuleHeader header, Function<String, CapsuleFormatException> fail) {
        this.fail = fail;
        this.maxMessageBytes = limits.maxMessageBytes();
        long vcpus = header == null ? 0 : Integer.toUnsignedLong(header.getVcpuCount());
        cap(CapsuleHeader.getDescriptor(), "required_cpuid", limits.maxCpuidEntries());
        cap(MachineState.getDescriptor(), "cpuid", limits.maxCpuidEntries());
        cap(MachineState.getDescriptor(), "vcpus", vcpus);
        cap(VcpuState.getDescriptor(), "msrs", vcpus * MAX_MSRS_PER_VCPU);
        cap(KvmCpuPart.getDescriptor(), "msrs", vcpus * MAX_MSRS_PER_VCPU);
        cap(Sregs.getDescriptor(), "interrupt_bitmap", vcpus * KVM_SREGS_INTERRUPT_WORDS);
        cap(DeviceState.getDescriptor(), "queued_requests", limits.maxQueuedRequests());
    }

    private void cap(Descriptor d, String field, long max) {
        caps.put(d.findFieldByName(field), max);
    }

    /**
     * Refuses (with {@code fail}) a header frame ({@code isHeader}) or state frame whose
     * repeated fields hold more elements than {@code limits} allow for {@code header}.
     */
    static void check(byte[] buf, int length, boolean isHeader, CapsuleLimits limits, CapsuleHeader header,
            Function<String, CapsuleFormatException> fail) {
        FrameCounts c = new FrameCounts(limits, header, fail);
        try {
            c.scan(CodedInputStream.newInstance(buf, 0, length), CapsuleFrame.getDescriptor(), "frame");
        } catch (InvalidProtocolBufferException e) {
            // Not well-formed: the parser says so in its own words.
        } catch (IOException e) {
            throw new AssertionError(e); // reading from an array
        }
    }

    private void scan(CodedInputStream in, Descriptor d, String where) throws IOException {
        while (!in.isAtEnd()) {
            int tag = in.readTag();
            FieldDescriptor f = d.findFieldByNumber(WireFormat.getTagFieldNumber(tag));
            int wireType = WireFormat.getTagWireType(tag);
            if (f == null) {
                // Ignored, but kept by protobuf: a flood of them would cost the heap what the caps save.
                if (++unknownFields > MAX_UNKNOWN_FIELDS) {
                    throw fail.apply(where + " has more than " + MAX_UNKNOWN_FIELDS
                            + " fields this format version does not define");
                }
                in.skipField(tag);
                continue;
            }
            String name = where + "." + f.getName();
            if (f.getJavaType() == FieldDescriptor.JavaType.MESSAGE && wireType == WireFormat.WIRETYPE_LENGTH_DELIMITED) {
                if (f.isRepeated()) {
                    count(f, 1, name);
                }
                int len = in.readRawVarint32();
                int old = in.pushLimit(len);
                scan(in, f.getMessageType(), name);
                in.popLimit(old);
            } else if (f.isRepeated() && wireType == WireFormat.WIRETYPE_LENGTH_DELIMITED && f.isPackable()) {
                int len = in.readRawVarint32();
                int old = in.pushLimit(len);
                long n = 0;
                while (!in.isAtEnd()) {
                    in.readRawVarint64();
                    n++;
                }
                in.popLimit(old);
                count(f, n, name);
            } else if (f.isRepeated()) {
                count(f, 1, name);
                if (f.equals(queued) && wireType == WireFormat.WIRETYPE_LENGTH_DELIMITED) {
                    int len = in.readRawVarint32();
                    if (len < 0 || len > maxMessageBytes) {
                        throw fail.apply(name + " holds a request of " + Integer.toUnsignedString(len)
                                + " bytes, over the cap of " + maxMessageBytes + " (vmfork.vmm.channel.max-message)");
                    }
                    in.skipRawBytes(len);
                } else {
                    in.skipField(tag);
                }
            } else {
                in.skipField(tag);
            }
        }
    }

    private void count(FieldDescriptor f, long n, String name) {
        long total = counts.merge(f, n, Long::sum);
        long cap = caps.getOrDefault(f, (long) DEFAULT_CAP);
        if (total > cap) {
            throw fail.apply(name + " has more than " + cap + " elements, the most this capsule may have");
        }
    }
}
