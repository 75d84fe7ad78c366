# Sourced by cross/parity.sh and cross/insns.sh: the qemu-user command line for an ARM target.
#   qemu_for TARGET [static|dynamic]   sets the array QEMU
# The guest C library must come from one glibc build. cross/setup.sh installs Debian's multiarch
# runtime (libc6:arm64 / libc6:armhf, needed by libstd-rust-web-dev), which the binary's interpreter
# path (/lib/ld-linux-*.so.*) already names, so no prefix is given then. Giving `-L
# /usr/<triple>` as well mixes the cross sysroot's ld.so (libc6-*-cross, an older build) with the
# multiarch libc.so.6 that ld.so finds under /lib/<triple>: the first pthread_create then loops
# forever in glibc's stack cache, so `run` (which starts a key-reader thread) never got past start-up
# under qemu. The cross sysroot is used only when the multiarch runtime is absent.
qemu_for() {
  local target="$1" kind="${2:-static}" exe cpu interp sysroot
  case "$target" in
    aarch64-*) exe=qemu-aarch64 cpu=cortex-a72 interp=/lib/ld-linux-aarch64.so.1 sysroot=/usr/aarch64-linux-gnu ;;
    armv7-*) exe=qemu-arm cpu=cortex-a7 interp=/lib/ld-linux-armhf.so.3 sysroot=/usr/arm-linux-gnueabihf ;;
    *) echo "qemu_for: unknown target $target" >&2; return 2 ;;
  esac
  [ "$kind" = static ] && exe="$exe-static"
  QEMU=("$exe" -cpu "$cpu")
  [ -e "$interp" ] || QEMU+=(-L "$sysroot")
}
