# syntax=docker/dockerfile:1
# Stage 1: compile sluice into one self-contained binary.
FROM denoland/deno:debian-2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts ./
COPY src ./src
RUN deno install --frozen && deno task compile

# Stage 2: the binary alone on a slim base, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sluice --create-home sluice \
 && mkdir -p /etc/sluice /var/lib/sluice/data \
 && chown -R sluice:sluice /etc/sluice /var/lib/sluice
COPY --from=build /src/dist/sluice /usr/local/bin/sluice
USER sluice
WORKDIR /var/lib/sluice
ENV SLUICE_PORT=8080 \
    SLUICE_HOSTNAME=0.0.0.0 \
    SLUICE_PLANS=/etc/sluice/plans.json \
    SLUICE_DATA_DIR=/var/lib/sluice/data
VOLUME ["/etc/sluice", "/var/lib/sluice/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${SLUICE_PORT}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
