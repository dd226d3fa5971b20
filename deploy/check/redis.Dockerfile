# A stand-in for redis:7 where Docker Hub cannot be reached: Debian's redis-server, with the
# data in /data as in the official image (the compose file's command and health check run as is).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
# The official image is built with protected mode off, so other containers may connect; this
# adds that to whatever command compose gives.
ENTRYPOINT ["sh", "-c", "exec \"$@\" --protected-mode no", "redis"]
CMD ["redis-server"]
