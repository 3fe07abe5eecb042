package io.vmfork.multijvm;

import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.ParameterContext;
import org.junit.jupiter.api.extension.ParameterResolver;

/**
 * Gives a test method a fresh {@link TestCluster} and closes it when the test ends, passed
 * or failed (JUnit closes the resources of a test's store after it): every node the test
 * started is killed.
 */
final class MultiJvmExtension implements ParameterResolver {
    @Override
    public boolean supportsParameter(ParameterContext parameter, ExtensionContext context) {
        return parameter.getParameter().getType() == TestCluster.class;
    }

    @Override
    public Object resolveParameter(ParameterContext parameter, ExtensionContext context) {
        String name = context.getRequiredTestClass().getSimpleName() + "." + context.getRequiredTestMethod().getName();
        return context.getStore(ExtensionContext.Namespace.create(MultiJvmExtension.class, name))
                .getOrComputeIfAbsent(TestCluster.class, k -> new TestCluster(name), TestCluster.class);
    }
}
