/**
 * Transfer of clone capsules between hosts (remote clones). The frames of the protocol
 * and the receiver's states are documented here, next to the code. (To come.)
 */
package io.vmfork.cluster.transfer;
