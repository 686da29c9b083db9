#!/usr/bin/env bash
# Build real BVLC Caffe (CPU, pycaffe, LMDB) from Debian's source package, into a cache
# folder outside the repository keyed by the source version and the Python it binds to.
# A second run finds the finished build and only prints how to use it.
#
#   PYTHON=.venv/bin/python scripts/build_caffe.sh
#
# Environment: PYTHON (the interpreter pycaffe is built for; CPython 3.11, because Debian 12's
# boost-python is built for it), DEEPMAMMO_CACHE (default ~/.cache/deepmammo), JOBS (make -j).
set -euo pipefail

CAFFE_VERSION="1.0.0+git20180821.99bd997-8"   # BVLC master 99bd997, bullseye's package
PYTHON="${PYTHON:-python3}"
CACHE="${DEEPMAMMO_CACHE:-$HOME/.cache/deepmammo}"
JOBS="${JOBS:-$(nproc)}"

pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$pyver" != "3.11" ]; then
  echo "build_caffe: $PYTHON is Python $pyver; real Caffe's pycaffe needs CPython 3.11 (Debian 12's boost-python)" >&2
  exit 2
fi
prefix="$CACHE/caffe-${CAFFE_VERSION//[^A-Za-z0-9.]/_}-py$pyver"

usage() {
  cat <<MSG
Real BVLC Caffe is ready in: $prefix
  pycaffe:  PYTHONPATH=$prefix/src/python $PYTHON -c 'import caffe'
  tool:     $prefix/build/tools/caffe
  tests:    found automatically (deepmammo.caffe.real.find_build), or set DEEPMAMMO_CAFFE=$prefix
MSG
}

# Caffe's own tools that the tests run beside `caffe` (the upgrade tools and extract_features;
# convert_imageset and compute_image_mean need OpenCV, which this build leaves out).
TOOLS="upgrade_net_proto_text upgrade_net_proto_binary upgrade_solver_proto_text extract_features"

if [ -f "$prefix/.complete" ]; then
  # A build finished before the tools were on the list gets them now (seconds: libcaffe is built).
  missing=$(for t in $TOOLS; do [ -x "$prefix/build/tools/$t" ] || echo "$t"; done)
  if [ -n "$missing" ]; then
    (cd "$prefix/build" && make -j"$JOBS" $missing >>"$prefix/make.log" 2>&1) \
      || { tail -n 40 "$prefix/make.log" >&2; exit 1; }
  fi
  usage; exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

echo "== build deps (Debian packages)"
deps="build-essential cmake dpkg-dev xz-utils ca-certificates python3-dev
libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-python-dev
libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgflags-dev libhdf5-dev liblmdb-dev
libopenblas-dev"
missing=$(for p in $deps; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Built in place (CMake and the RPATHs hold absolute paths); `.complete` is written last, so a
# build that died half way is never taken for a finished one and is started over.
work="$prefix"
rm -rf "$work"; mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial"

echo "== source package caffe=$CAFFE_VERSION (bullseye), from the mirror this machine already uses"
# The mirror is read from the system's own apt configuration; none is written into the project.
mirror=$( { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
              /etc/apt/sources.list 2>/dev/null || true; } \
          | grep -E '^(URIs:|deb )' | grep -v security | head -n1 \
          | awk '{ if ($1 == "deb") { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } } else print $2 }')
if [ -z "$mirror" ]; then echo "build_caffe: no Debian mirror found in /etc/apt" >&2; exit 2; fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb-src [signed-by=$keyring] $mirror bullseye main" > "$work/apt/sources.list"
aptopts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache::Archives=$work/apt/archives")
apt-get "${aptopts[@]}" update -qq
(cd "$work" && apt-get "${aptopts[@]}" source -qq "caffe=$CAFFE_VERSION" >/dev/null)
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'caffe-*' | head -n1)
mv "$src" "$work/src"; src="$work/src"

echo "== patches for today's protobuf and numpy"
# protobuf >= 3.21 has only the one-argument SetTotalBytesLimit.
sed -i -E 's/SetTotalBytesLimit\(([^,()]+),[^)]*\)/SetTotalBytesLimit(\1)/' "$src/src/caffe/util/io.cpp"
# numpy 2 removed ndarray.tostring() and binary np.fromstring.
sed -i -e 's/\.tostring()/.tobytes()/g' \
       -e 's/np\.fromstring(\([^)]*\))/np.frombuffer(\1).copy()/g' "$src/python/caffe/io.py"
grep -q 'SetTotalBytesLimit(kProtoReadBytesLimit)' "$src/src/caffe/util/io.cpp" \
  || { echo "build_caffe: io.cpp patch did not apply" >&2; exit 2; }

echo "== cmake + make -j$JOBS (about 3 minutes on 2 cores)"
inc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("INCLUDEPY"))')
libdir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
lib="$libdir/libpython$pyver.so"
[ -f "$lib" ] || lib=$(ls /usr/lib/x86_64-linux-gnu/libpython$pyver.so* 2>/dev/null | head -n1)
pyexe=$("$PYTHON" -c 'import sys; print(sys.executable)')
mkdir -p "$work/build"
(cd "$work/build" && cmake "$src" -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON -DUSE_CUDNN=OFF \
   -DUSE_NCCL=OFF -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=ON -DUSE_HDF5=ON -DBLAS=Open \
   -DBUILD_python=ON -DBUILD_python_layer=ON -DBUILD_docs=OFF -DBUILD_matlab=OFF \
   -Dpython_version=$pyver -DPYTHON_EXECUTABLE="$pyexe" -DPYTHON_INCLUDE_DIR="$inc" \
   -DPYTHON_LIBRARY="$lib" >"$work/cmake.log" 2>&1) \
  || { tail -n 30 "$work/cmake.log" >&2; exit 1; }
(cd "$work/build" && make -j"$JOBS" caffe pycaffe caffe.bin $TOOLS >"$work/make.log" 2>&1) \
  || { tail -n 40 "$work/make.log" >&2; exit 1; }

PYTHONPATH="$src/python" GLOG_minloglevel=2 "$PYTHON" -c 'import caffe' \
  || { echo "build_caffe: built, but 'import caffe' fails with $PYTHON (needs numpy scipy scikit-image protobuf six)" >&2; exit 1; }
touch "$work/.complete"
usage
