#!/usr/bin/env bash
# Installs the real parts the tests start (Debian packages), and says what it installs.
#
# As root with apt-get (CI, a container) it installs what is missing; otherwise it lists what
# is missing and the tests that need it skip with the reason (or fail under .ci/run, which
# sets NBCLUSTER_TEST_REQUIRE_PARTS=1). Each `want` line: Debian package, a file or command
# that shows it is installed, and what the tests use it for.
set -euo pipefail

missing=()
want() {
  local package=$1 probe=$2 why=$3
  if [ -e "$probe" ] || command -v "$probe" >/dev/null 2>&1; then
    return
  fi
  missing+=("$package")
  echo "test parts: $package is missing ($why)"
}

want iproute2 ip "network namespaces as separate machines"
want nodejs node "rebuilding the widget bundles from js/ to check the committed ones"
want npm npm "installing js/'s pinned build tools (esbuild, TypeScript, dagre)"
want chromium /usr/bin/chromium "browser tests in JupyterLab (tests/browser, driven by Playwright)"
want util-linux nsenter "entering the test machines' namespaces (tests/cluster_managers)"
want openssh-server /usr/sbin/sshd "an sshd per test machine, for the ssh launcher's tests"
want openssh-client ssh "the ssh launcher runs the system ssh client"
want munge /usr/sbin/munged "Slurm's authentication, for the slurm launcher's tests"
want slurmctld /usr/sbin/slurmctld "a Slurm controller for the slurm launcher's tests"
want slurmd /usr/sbin/slurmd "a Slurm node daemon per test machine"
want slurm-client sbatch "the slurm launcher runs sbatch/squeue/sacct/scancel/srun"
want passwd /usr/sbin/useradd "real OS users (useradd/userdel) for the JupyterHub tests (tests/hub)"

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test parts: installing Debian packages as root: ${missing[*]}"
  apt-get update -qq
  # Without systemd, package scripts would start sshd, munged and slurmd through invoke-rc.d;
  # the tests start their own. A policy-rc.d that answers 101 stops that, while installing.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
else
  echo "test parts: not root or no apt-get; tests that need ${missing[*]} will skip"
fi
