#!/bin/bash
# As the official redis image: options alone run redis-server with them, and without a config
# file that says otherwise, protected mode is off (the container's network is the boundary).
set -euo pipefail

if [ "${1:0:1}" = '-' ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ]; then
  config=
  if [ $# -ge 2 ] && [ -f "$2" ]; then
    config=$2
  fi
  if [ -z "$config" ] || ! grep -q '^protected-mode' "$config"; then
    set -- "$@" --protected-mode no
  fi
fi

exec "$@"
