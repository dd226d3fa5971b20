# A stand-in for postgres:16 where Docker Hub cannot be reached: Debian's PostgreSQL, set up
# from POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB like the official image, with the data
# in /var/lib/postgresql/data.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && ln -s /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/postgres /usr/local/bin/
COPY postgres-entrypoint.sh /usr/local/bin/
USER postgres
CMD ["postgres-entrypoint.sh"]
