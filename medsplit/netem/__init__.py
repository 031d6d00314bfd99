"""Emulated hospital links for benchmarks: parties in network namespaces joined by shaped veth
pairs (:mod:`~medsplit.netem.topology`), a userspace delay/loss stand-in for netem
(:mod:`~medsplit.netem.delayer`) and a TCP probe of what a link delivers
(:mod:`~medsplit.netem.probe`). Linux and root only; nothing here is used by training."""
