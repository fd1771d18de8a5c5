#!/bin/sh
# Copy what a cfgsup bundle needs (its NEEDS file, written by packaging/needs.py) from this
# system into OUT: the program interpreter at its own path, each library (links followed) into
# OUT/lib, a folder every glibc loader searches. Fails, naming it, when something is missing or
# this glibc is older than the bundle's floor.
#   runtime-libs.sh NEEDS OUT
set -eu
[ $# -eq 2 ] || { echo "usage: runtime-libs.sh NEEDS OUT" >&2; exit 2; }
needs=$1 out=$2
mkdir -p "$out/lib"
status=0
while read -r kind value; do
  case $kind in
    glibc)
      have=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed 's/^glibc //') || have=
      if [ -z "$have" ]; then
        echo "runtime-libs.sh: this system has no glibc (the bundle needs glibc >= $value)" >&2
        status=1
      elif ! awk -v h="$have" -v w="$value" 'BEGIN { split(h, a, "."); split(w, b, ".");
            exit !(a[1] > b[1] || (a[1] == b[1] && a[2] >= b[2])) }'; then
        echo "runtime-libs.sh: glibc $have is older than the bundle's floor $value" >&2
        status=1
      fi ;;
    interpreter)
      mkdir -p "$out$(dirname "$value")"
      cp -L "$value" "$out$value" || status=1 ;;
    library)
      found=
      for dir in /lib/*-linux-gnu /usr/lib/*-linux-gnu /lib64 /usr/lib64 /lib /usr/lib; do
        if [ -e "$dir/$value" ]; then found=$dir/$value; break; fi
      done
      if [ -z "$found" ]; then
        echo "runtime-libs.sh: $value not found on this system" >&2
        status=1
      else
        cp -L "$found" "$out/lib/$value"
      fi ;;
  esac
done < "$needs"
exit $status
