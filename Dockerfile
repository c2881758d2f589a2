# psk-guard image for people who have Docker: the same file system as `scripts/release` builds
# without an engine (the stripped glibc-2.17 binary, the loader and glibc libraries it loads, a
# minimal passwd/group), on an empty base. No shell, no package manager.
#   docker build -t psk-guard:0.1.0 .
#   podman build --build-arg ROOTFS_FROM=build -t psk-guard:0.1.0 .   (buildah/podman resolve a stage
#     named by an ARG in FROM only when the ARG is given: buildah issues 3939, 4312)
# Without Docker: scripts/release, then `skopeo copy oci:dist/oci:0.1.0 docker://REGISTRY/psk-guard:0.1.0`.
#
# ROOTFS_FROM names the image the final stage copies /dist/rootfs/ from: by default the build stage
# below. tests/dockerfile.sh points it at an image holding scripts/release's rootfs (the tests
# cannot pull rust:1-bookworm) and checks the result equals the OCI image scripts/release makes.
ARG ROOTFS_FROM=build
# Fully qualified: buildah and podman do not guess a registry for a short name.
FROM docker.io/library/rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip binutils \
    && python3 -m pip install --break-system-packages ziglang==0.13.0 cargo-zigbuild==0.24.1
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY scripts ./scripts
RUN scripts/release --out /dist --rootfs-only

FROM ${ROOTFS_FROM} AS rootfs

# The default user is root (uid 0), which the per-node Jobs need to read conf.db; the coordinator
# Job and CronJob set their own runAsUser (see docs/deploy/).
FROM scratch
COPY --from=rootfs /dist/rootfs/ /
ENTRYPOINT ["/usr/local/bin/psk-guard"]
CMD ["check"]
