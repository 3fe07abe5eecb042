/**
 * The cluster page: a live web page of the whole cluster that every node serves on its
 * status port ({@link io.vmfork.cluster.web.ClusterPage}: the page, its assets from this
 * jar under {@code io/vmfork/cluster/web/}, and its feed of server-sent events), one
 * {@link io.vmfork.cluster.web.PageFeed} actor per connected browser, and the page's
 * bounds ({@link io.vmfork.cluster.web.PageSettings}, {@code vmfork.node.status.page}).
 */
package io.vmfork.cluster.web;
