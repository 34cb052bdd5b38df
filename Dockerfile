# The Tocsin image: every Tocsin service in compose.yaml runs it with its own command.
#
# The geospatial stack comes as manylinux wheels that bundle their native libraries
# (GDAL in rasterio and pyogrio, PROJ in pyproj, HDF5/netCDF in netCDF4, ecCodes pinned in
# pyproject.toml), so the slim base needs no system packages and no compiler.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# A plain (not editable) install into a virtual environment, which is all the final image
# takes: no sources, no build tools.
RUN python -m venv /opt/tocsin \
    && /opt/tocsin/bin/pip install --upgrade pip \
    && /opt/tocsin/bin/pip install /src

FROM python:3.11-slim
COPY --from=build /opt/tocsin /opt/tocsin
# A non-root user owning /data: a new named volume mounted there takes this ownership.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/tocsin tocsin \
    && mkdir /data \
    && chown tocsin:tocsin /data
ENV PATH=/opt/tocsin/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOCSIN_DATA_DIR=/data
USER tocsin
WORKDIR /home/tocsin
# Each service names its command (`tocsin worker ...`); run alone, the image lists them.
CMD ["tocsin", "--help"]
