#!/bin/sh
# Entry point of the hcsgraph image: `scheduler ARGS`, `worker ARGS`, `hcsgraph ARGS`, or any command.
set -e
case "${1:-}" in
    scheduler) shift; exec dask scheduler "$@" ;;
    worker) shift; exec dask worker "$@" ;;
    hcsgraph) shift; exec hcsgraph "$@" ;;
    "") exec hcsgraph --help ;;
    *) exec "$@" ;;
esac
