#!/bin/sh
# SPDX-License-Identifier: MIT
# install-deps.sh - makes sure the build dependencies of mbroker are present.
# As root it installs Debian's packages; otherwise it prints the apt-get line
# to run.  `--check` only tests, exiting 1 when something is missing;
# `--fuzz` is about what `make fuzz` needs (clang and libFuzzer), `--bench`
# about what `make bench` compares with and plots with.  The
# Makefile runs it before the first build.
set -eu

PACKAGES="pkg-config libevent-dev libjansson-dev libcmocka-dev libxxhash-dev
	python3 python3-numpy curl supervisor
	python3-torch python3-torchaudio libopenblas0-pthread espeak-ng sox
	libpocketsphinx-dev pocketsphinx-en-us pocketsphinx-testdata"
MODULES="libevent_core jansson cmocka libxxhash pocketsphinx"
FUZZ=0
BENCH=0
CHECK=0
for arg in "$@"; do
	case "$arg" in
	--fuzz) FUZZ=1 ;;
	--bench) BENCH=1 ;;
	--check) CHECK=1 ;;
	*) echo "usage: install-deps.sh [--fuzz | --bench] [--check]" >&2; exit 2 ;;
	esac
done
if [ $FUZZ -eq 1 ]; then
	PACKAGES="clang libclang-rt-14-dev libfuzzer-14-dev"
fi
if [ $BENCH -eq 1 ]; then
	PACKAGES="gnuplot-nox redis-server redis-tools python3"
fi

have_all() {
	if [ $BENCH -eq 1 ]; then
		for c in gnuplot redis-server redis-benchmark python3; do
			command -v $c >/dev/null 2>&1 || return 1
		done
		return 0
	fi
	if [ $FUZZ -eq 1 ]; then
		echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)
		      { (void)d; (void)n; return 0; }' |
			clang -fsanitize=fuzzer -x c - -o /dev/null \
				>/dev/null 2>&1
		return
	fi
	command -v pkg-config >/dev/null 2>&1 || return 1
	# The Python client's tests use the system python3 and its numpy;
	# the metrics test scrapes with curl; one test runs supervisord.
	/usr/bin/python3 -c "import numpy" >/dev/null 2>&1 || return 1
	command -v curl >/dev/null 2>&1 || return 1
	command -v supervisord >/dev/null 2>&1 || return 1
	# The engine examples and their tests: PyTorch and torchaudio (on
	# OpenBLAS: Debian's torch with the reference BLAS takes 4 s for
	# what OpenBLAS does in 1), speech from espeak-ng and sox,
	# pocketsphinx with its model and clips.
	dpkg -s libopenblas0-pthread >/dev/null 2>&1 || return 1
	/usr/bin/python3 -c "import torch, torchaudio" >/dev/null 2>&1 ||
		return 1
	for c in espeak-ng sox; do
		command -v $c >/dev/null 2>&1 || return 1
	done
	[ -d /usr/share/pocketsphinx/model/en-us/en-us ] || return 1
	[ -d /usr/share/pocketsphinx/test/data/librivox ] || return 1
	for m in $MODULES; do
		pkg-config --exists "$m" || return 1
	done
}

if have_all; then
	exit 0
fi
if [ $CHECK -eq 1 ]; then
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "mbroker needs: $PACKAGES" >&2
	echo "run as root: apt-get install -y --no-install-recommends $PACKAGES" >&2
	exit 1
fi
echo "install-deps: installing $PACKAGES" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
have_all || { echo "install-deps: still missing after install" >&2; exit 1; }
