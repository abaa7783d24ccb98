#!/bin/sh
# Copies the interpreter, its standard library (less tests, Tk, IDLE, ensurepip, lib2to3) and exactly
# the shared libraries they load into $1, so the code runtime can sit on a static busybox root
# instead of a whole Debian one. Runs inside a build stage FROM bench/agent-base:bookworm.
set -eu
out=$1
mkdir -p "$out/usr/bin" "$out/usr/lib/x86_64-linux-gnu" "$out/usr/lib64" "$out/etc/ssl/certs"
cp -L /usr/bin/python3.11 "$out/usr/bin/python3.11"
ln -s python3.11 "$out/usr/bin/python3"
ln -s python3 "$out/usr/bin/python"
cp -a /usr/lib/python3.11 "$out/usr/lib/python3.11"
cd "$out/usr/lib/python3.11"
rm -rf test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data distutils config-3.11-* \
  unittest/test sqlite3/test ctypes/test tkinter turtle.py site-packages dist-packages \
  lib-dynload/_test*.so lib-dynload/_xx*.so lib-dynload/xx*.so lib-dynload/_ctypes_test*.so
find . -name '__pycache__' -type d -prune -exec rm -rf {} +
# Byte-compile once here so no task pays for it and the (read-only at run time) tree stays clean.
/usr/bin/python3.11 -m compileall -q -j 0 . >/dev/null || true
cd /
# Every shared object the interpreter and its extension modules need, by ldd.
for elf in /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so; do
  [ -e "$out$elf" ] || [ "$elf" = /usr/bin/python3.11 ] || continue
  ldd "$elf" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib64/{print $1}'
done | sort -u | while read -r lib; do
  case "$lib" in
    /lib64/*) cp -L "$lib" "$out/usr/lib64/$(basename "$lib")" ;;
    *) cp -L "$lib" "$out/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
  esac
done
ln -s usr/lib "$out/lib"
ln -s usr/lib64 "$out/lib64"
cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
