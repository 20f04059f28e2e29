# Sourced by tools/profile-*.sh (set NEED_WHO to the calling script's name for the messages).
# `need COMMAND DEBIAN-PACKAGE` makes sure COMMAND exists: as root (and unless MAYHEM_NO_INSTALL is
# set) it installs the Debian package; otherwise it stops with one clear line naming the package.
# `pick_binary` sets $bin, when empty, to the `profile` preset's mayhem, else the release one, and
# stops with one clear line when there is none.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${MAYHEM_NO_INSTALL:-}" = "" ]; then
    echo "${NEED_WHO}: '$1' is missing; installing Debian package $2" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2 || true
  fi
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "${NEED_WHO}: error: '$1' not found. Install the Debian package '$2' (tools/install-deps.sh does)." >&2
  exit 1
}

pick_binary() {
  if [ -z "$bin" ]; then
    for b in build/profile/mayhem build/release/mayhem; do [ -x "$b" ] && { bin=$b; break; }; done
  fi
  [ -n "$bin" ] && [ -x "$bin" ] || {
    echo "${NEED_WHO}: error: no mayhem binary; build one: cmake --preset profile && cmake --build --preset profile" >&2
    exit 1
  }
}
