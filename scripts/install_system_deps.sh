#!/bin/sh
# System packages the tests use: WordNet (synonym replacement reads it through NLTK).
# Idempotent: installs only where apt-get exists and the files are missing; a no-op elsewhere.
set -eu

if [ -f /usr/share/wordnet/data.noun ] && [ -f /usr/share/wordnet/index.sense ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: no apt-get here; install WordNet yourself (or run nltk.download('wordnet'))" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index
