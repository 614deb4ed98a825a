//! clawgate's tool sandbox: a wasmtime component pool, a Linux-namespace container backend and a
//! Redis-queue worker. Nothing is built here yet; tools are only relayed to upstream servers.
