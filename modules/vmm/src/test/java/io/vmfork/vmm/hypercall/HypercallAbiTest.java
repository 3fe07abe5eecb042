package io.vmfork.vmm.hypercall;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.x86.GuestLayout;
import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The hypercall ABI is stated three times: the SDK header vmfork.h, {@link Hypercalls}
 * with {@link GuestLayout}, and docs/hypercalls.md. This test makes them agree. Every
 * public constant of Hypercalls must have its header macro, and every numeric macro of
 * the header a Java counterpart (or a place in {@link #HEADER_ONLY}), so that adding a
 * constant on one side only fails here.
 */
class HypercallAbiTest {
    private static final Path REPO = Path.of(System.getProperty("user.dir")).resolve("../..").normalize();
    private static final Path HEADER = REPO.resolve("native-kvm/src/main/c/sdk/include/vmfork.h");
    private static final Path DOC = REPO.resolve("docs/hypercalls.md");

    /** int fields of Hypercalls that are not hypercall numbers, and their header macros. */
    private static final Map<String, String> INT_CONSTANTS = Map.of(
            "ABI_VERSION", "VMF_ABI_VERSION",
            "PORT", "VMF_HC_PORT",
            "CONSOLE_MAX", "VMF_CONSOLE_MAX",
            "ENTROPY_MAX", "VMF_ENTROPY_MAX",
            "FORK_PARENT", "VMF_FORK_PARENT",
            "FORK_CHILD", "VMF_FORK_CHILD");
    /** long fields of Hypercalls that are not status codes, and their header macros. */
    private static final Map<String, String> LONG_CONSTANTS = Map.of(
            "RECV_NONBLOCK", "VMF_RECV_NONBLOCK",
            "BOOT_INFO_MAGIC", "VMF_BOOT_INFO_MAGIC",
            "FORK_REMOTE", "VMF_FORK_REMOTE",
            "FORK_STATUS_WAIT_MAX", "VMF_FORK_STATUS_WAIT_MAX");
    /** The hypercall-number field whose name differs from its hypercall's name. */
    private static final Map<String, String> CALL_FIELD_NAMES = Map.of("ABI_VERSION_CALL", "ABI_VERSION");
    /** Header macros with no Java counterpart: the SDK's link address. */
    private static final Set<String> HEADER_ONLY = Set.of("VMF_IMAGE_BASE");

    private static final Pattern DEFINE = Pattern.compile("^\\s*#\\s*define\\s+(VMF_\\w+)\\s+(.*)$");
    private static final Pattern STATUS = Pattern.compile("OK|E[A-Z0-9]+");
    private static final Pattern DOC_HEADING = Pattern.compile("^### (\\d+) ([A-Z][A-Z0-9_]*)(.*)$");

    private static Map<String, Long> header;
    private static String headerText;
    private static String doc;

    @BeforeAll
    static void read() throws IOException {
        assertTrue(Files.isRegularFile(HEADER), "the SDK header is missing: " + HEADER
                + " (run the test from the vmm module's directory, as Maven does)");
        assertTrue(Files.isRegularFile(DOC), "the ABI reference is missing: " + DOC);
        headerText = Files.readString(HEADER);
        header = parseDefines(headerText);
        doc = Files.readString(DOC);
    }

    @Test
    void everyHypercallsConstantMatchesTheHeader() throws IllegalAccessException {
        List<String> problems = new ArrayList<>();
        for (Field f : constants()) {
            String name = f.getName();
            Class<?> t = f.getType();
            String macro;
            if (t == byte.class && name.equals("OUT_EAX_DX")) {
                // No macro: the header's vmf_hypercall() is the instruction itself.
                if (f.getByte(null) != (byte) 0xef || !headerText.contains("out %%eax, (%%dx)")) {
                    problems.add("OUT_EAX_DX: the header's vmf_hypercall() must be `out %eax, (%dx)` (0xEF)");
                }
                continue;
            } else if (t == int.class) {
                macro = INT_CONSTANTS.getOrDefault(name, "VMF_HC_" + CALL_FIELD_NAMES.getOrDefault(name, name));
            } else if (t == long.class) {
                macro = STATUS.matcher(name).matches() ? "VMF_" + name : LONG_CONSTANTS.get(name);
            } else {
                macro = null;
            }
            if (macro == null) {
                problems.add(name + ": a " + t + " constant this test does not know; map it to its vmfork.h macro");
                continue;
            }
            long value = ((Number) f.get(null)).longValue();
            Long h = header.get(macro);
            if (h == null) {
                problems.add(name + " = " + value + ": vmfork.h has no " + macro);
            } else if (h != value) {
                problems.add(name + " = " + value + " but vmfork.h has " + macro + " = " + h);
            }
        }
        assertTrue(problems.isEmpty(), String.join("\n", problems));
    }

    @Test
    void everyHeaderMacroHasAJavaCounterpart() {
        Map<String, Long> javaByMacro = new TreeMap<>();
        hypercallNumbers().forEach((call, nr) -> javaByMacro.put("VMF_HC_" + call, (long) nr));
        statusCodes().forEach((code, v) -> javaByMacro.put("VMF_" + code, v));
        javaByMacro.put("VMF_ABI_VERSION", (long) Hypercalls.ABI_VERSION);
        javaByMacro.put("VMF_HC_PORT", (long) Hypercalls.PORT);
        javaByMacro.put("VMF_CONSOLE_MAX", (long) Hypercalls.CONSOLE_MAX);
        javaByMacro.put("VMF_ENTROPY_MAX", (long) Hypercalls.ENTROPY_MAX);
        javaByMacro.put("VMF_FORK_PARENT", (long) Hypercalls.FORK_PARENT);
        javaByMacro.put("VMF_FORK_CHILD", (long) Hypercalls.FORK_CHILD);
        javaByMacro.put("VMF_RECV_NONBLOCK", Hypercalls.RECV_NONBLOCK);
        javaByMacro.put("VMF_FORK_REMOTE", Hypercalls.FORK_REMOTE);
        javaByMacro.put("VMF_FORK_STATUS_WAIT_MAX", Hypercalls.FORK_STATUS_WAIT_MAX);
        javaByMacro.put("VMF_BOOT_INFO_MAGIC", Hypercalls.BOOT_INFO_MAGIC);
        javaByMacro.put("VMF_BOOT_INFO_GPA", GuestLayout.BOOT_INFO);
        javaByMacro.put("VMF_IMAGE_MIN_GPA", GuestLayout.IMAGE_MIN);
        javaByMacro.put("VMF_NOTE_GUEST", (long) io.vmfork.vmm.guest.ElfImage.NOTE_GUEST);

        List<String> problems = new ArrayList<>();
        header.forEach((macro, value) -> {
            if (HEADER_ONLY.contains(macro)) {
                return;
            }
            Long j = javaByMacro.get(macro);
            if (j == null) {
                problems.add("vmfork.h defines " + macro + " = " + value + " but the VMM has no counterpart");
            } else if (!j.equals(value)) {
                problems.add("vmfork.h defines " + macro + " = " + value + " but the VMM has " + j);
            }
        });
        javaByMacro.keySet().stream().filter(m -> !header.containsKey(m))
                .forEach(m -> problems.add("vmfork.h has no " + m));
        assertTrue(problems.isEmpty(), String.join("\n", problems));
    }

    @Test
    void theSdkImageBaseIsWhereImagesMayLoad() {
        long base = header.get("VMF_IMAGE_BASE");
        assertTrue(base >= GuestLayout.IMAGE_MIN, "VMF_IMAGE_BASE lies below GuestLayout.IMAGE_MIN");
        assertEquals(0, base % GuestLayout.PAGE, "VMF_IMAGE_BASE is not page aligned");
    }

    @Test
    void hypercallNumbersAndStatusCodesAreDistinct() {
        Map<Integer, String> seen = new TreeMap<>();
        hypercallNumbers().forEach((call, nr) -> {
            String other = seen.put(nr, call);
            assertNull(other, "hypercalls " + other + " and " + call + " share number " + nr);
            assertEquals(call, Hypercalls.name(nr), "Hypercalls.name(" + nr + ")");
        });
        Map<Long, String> codes = new TreeMap<>();
        statusCodes().forEach((code, v) -> {
            String other = codes.put(v, code);
            assertNull(other, "status codes " + other + " and " + code + " share value " + v);
            assertTrue(code.equals("OK") ? v == 0 : v < 0, code + " = " + v + ": errors are negative, OK is 0");
        });
    }

    @Test
    void theReferenceHasASectionPerHypercall() {
        Map<Integer, String> sections = new TreeMap<>();
        for (String line : doc.split("\n")) {
            Matcher m = DOC_HEADING.matcher(line.stripTrailing());
            if (m.matches() && m.group(3).isEmpty()) {
                String other = sections.put(Integer.parseInt(m.group(1)), m.group(2));
                assertNull(other, "docs/hypercalls.md has two sections for number " + m.group(1));
            }
        }
        Map<Integer, String> expected = new TreeMap<>();
        hypercallNumbers().forEach((call, nr) -> expected.put(nr, call));
        assertEquals(expected, sections, "docs/hypercalls.md must have one heading \"### <number> <NAME>\" per "
                + "hypercall of Hypercalls, and none for others (reserved numbers carry text after the name)");
        assertTrue(doc.contains("ABI, version " + Hypercalls.ABI_VERSION),
                "docs/hypercalls.md must state version " + Hypercalls.ABI_VERSION + " in its title");
    }

    @Test
    void theReferenceListsEveryStatusCode() {
        List<String> missing = new ArrayList<>();
        statusCodes().forEach((code, v) -> {
            String row = "| " + v + " | `VMF_" + code + "` |";
            if (!doc.contains(row)) {
                missing.add(row);
            }
        });
        assertTrue(missing.isEmpty(), "docs/hypercalls.md's status table lacks the rows:\n" + String.join("\n", missing));
    }

    // ---- helpers ----------------------------------------------------------------------

    /** Public static final fields of Hypercalls. */
    private static List<Field> constants() {
        List<Field> out = new ArrayList<>();
        for (Field f : Hypercalls.class.getDeclaredFields()) {
            int m = f.getModifiers();
            if (Modifier.isPublic(m) && Modifier.isStatic(m) && Modifier.isFinal(m)) {
                out.add(f);
            }
        }
        assertFalse(out.isEmpty(), "Hypercalls has no constants");
        return out;
    }

    /** Hypercall name (as in VMF_HC_<name> and the docs) to number, from Hypercalls. */
    private static Map<String, Integer> hypercallNumbers() {
        Map<String, Integer> out = new LinkedHashMap<>();
        for (Field f : constants()) {
            if (f.getType() == int.class && !INT_CONSTANTS.containsKey(f.getName())) {
                out.put(CALL_FIELD_NAMES.getOrDefault(f.getName(), f.getName()), (Integer) get(f));
            }
        }
        return out;
    }

    /** Status code name (OK, EINVAL, ...) to value, from Hypercalls. */
    private static Map<String, Long> statusCodes() {
        Map<String, Long> out = new LinkedHashMap<>();
        for (Field f : constants()) {
            if (f.getType() == long.class && STATUS.matcher(f.getName()).matches()) {
                out.put(f.getName(), (Long) get(f));
            }
        }
        return out;
    }

    private static Object get(Field f) {
        try {
            return f.get(null);
        } catch (IllegalAccessException e) {
            throw new AssertionError(e);
        }
    }

    /**
     * Every object-like {@code #define VMF_...} of the header with its value. Accepts C
     * integer literals (decimal or hex, u/l suffixes), in parentheses and negated;
     * anything else fails, so that a macro this parser misreads is noticed.
     */
    static Map<String, Long> parseDefines(String text) {
        String noComments = text.replaceAll("(?s)/\\*.*?\\*/", " ").replaceAll("//[^\n]*", "");
        Map<String, Long> out = new TreeMap<>();
        for (String line : noComments.split("\n")) {
            Matcher m = DEFINE.matcher(line);
            if (!m.matches()) {
                continue;
            }
            String name = m.group(1);
            String value = m.group(2).strip();
            Long v = parseInteger(value);
            assertNotNull(v, "vmfork.h: cannot read the value of " + name + ": " + value);
            assertNull(out.put(name, v), "vmfork.h defines " + name + " twice");
        }
        return out;
    }

    private static Long parseInteger(String s) {
        String t = s.strip();
        while (t.startsWith("(") && t.endsWith(")")) {
            t = t.substring(1, t.length() - 1).strip();
        }
        boolean negative = t.startsWith("-");
        if (negative) {
            t = t.substring(1).strip();
        }
        Matcher m = Pattern.compile("(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*").matcher(t);
        if (!m.matches()) {
            return null;
        }
        String digits = m.group(1);
        BigInteger v = digits.startsWith("0x") || digits.startsWith("0X")
                ? new BigInteger(digits.substring(2), 16)
                : new BigInteger(digits);
        if (v.bitLength() > 64) {
            return null;
        }
        long bits = v.longValue();
        return negative ? -bits : bits;
    }
}
