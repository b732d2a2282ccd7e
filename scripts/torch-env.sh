# Sourced by the scripts that build or run millrace outside `make` (the Makefile exports the
# same): where libtorch is, for tch's build (LIBTORCH) and for the binaries, which have no rpath
# to it (LD_LIBRARY_PATH). scripts/setup.sh installs it.
MILLRACE_CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
export LIBTORCH="${LIBTORCH:-$MILLRACE_CACHE/libtorch}"
case ":${LD_LIBRARY_PATH:-}:" in
  *":$LIBTORCH/lib:"*) ;;
  *) export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
