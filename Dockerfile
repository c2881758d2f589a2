# psk-guard image: build with the Rust toolchain, run on a minimal base with only libc.
#   docker build -t ghcr.io/psk-guard/psk-guard:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin psk-guard && strip target/release/psk-guard

# distroless/cc: glibc and CA certificates, no shell, no package manager. The default user is root
# (uid 0), which the per-node Jobs need to read conf.db; the coordinator Job and CronJob run as
# 65532 (see docs/deploy/).
FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/psk-guard /usr/local/bin/psk-guard
ENTRYPOINT ["/usr/local/bin/psk-guard"]
CMD ["check"]
