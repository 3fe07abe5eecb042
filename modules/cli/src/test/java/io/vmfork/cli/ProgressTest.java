package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** Progress: one rewritten line on a terminal, plain step lines elsewhere. */
class ProgressTest {
    @Test
    void elsewhereOnlyStepsArePrintedEachOnALineOfItsOwn() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        Progress p = Progress.of(new PrintStream(bytes, true, StandardCharsets.UTF_8), false, "t ");
        p.step("one");
        p.update("1/2");
        p.step("two");
        p.clear();
        String out = bytes.toString(StandardCharsets.UTF_8);
        assertFalse(out.contains("\r"), out);
        assertFalse(out.contains("1/2"), out);
        assertTrue(out.matches("t \\[ *[\\d.]+ s\\] one\nt \\[ *[\\d.]+ s\\] two\n"), out);
    }

    @Test
    void onATerminalOneLineRewritesItselfAndFitsTheWidth() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        Progress p = Progress.of(new PrintStream(bytes, true, StandardCharsets.UTF_8), true, "t ");
        p.step("one");
        p.update("1/2");
        p.step("x".repeat(200));
        p.clear();
        String out = bytes.toString(StandardCharsets.UTF_8);
        assertFalse(out.contains("\n"), out);
        String[] shown = out.split("\r\033\\[K", -1);
        // "", one, one: 1/2, the long one cut to 79 columns, and the clearing (empty).
        assertEquals(5, shown.length, out);
        assertTrue(shown[1].endsWith("] one"), shown[1]);
        assertTrue(shown[2].endsWith("] one: 1/2"), shown[2]);
        assertEquals(79, shown[3].length(), shown[3]);
        assertTrue(shown[3].endsWith("..."), shown[3]);
        assertEquals("", shown[4]);
    }
}
