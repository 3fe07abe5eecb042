package io.vmfork.cli;

import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigValueFactory;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** Option values in HOCON's units, as the configuration takes them. */
final class Converters {
    private Converters() {
    }

    /** A memory size such as 64M, 64MiB, 1G, 1GiB or a number of bytes. */
    static final class Size implements ITypeConverter<Long> {
        @Override
        public Long convert(String text) {
            try {
                return ConfigFactory.empty().withValue("v", ConfigValueFactory.fromAnyRef(text)).getBytes("v");
            } catch (ConfigException e) {
                throw new TypeConversionException("'" + text + "' is not a size (try 64M or 1G)");
            }
        }
    }

    /** A duration such as 10s, 500ms or 2m. */
    static final class Duration implements ITypeConverter<java.time.Duration> {
        @Override
        public java.time.Duration convert(String text) {
            try {
                return ConfigFactory.empty().withValue("v", ConfigValueFactory.fromAnyRef(text)).getDuration("v");
            } catch (ConfigException e) {
                throw new TypeConversionException("'" + text + "' is not a duration (try 10s or 500ms)");
            }
        }
    }

    /** on or off (or true and false, as HOCON takes them, and as picocli passes a boolean's default). */
    static final class OnOff implements ITypeConverter<Boolean> {
        @Override
        public Boolean convert(String text) {
            return switch (text) {
                case "on", "true" -> true;
                case "off", "false" -> false;
                default -> throw new TypeConversionException("'" + text + "' is neither on nor off");
            };
        }
    }
}
