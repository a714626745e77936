#!/usr/bin/env bash
# Copy the shipped mosquitto config into the Helm chart (Helm cannot read files
# outside the chart directory). tests/e2e/test_chart.py fails when the copies
# differ, so run this after editing broker-config/mosquitto/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
src="$repo/broker-config/mosquitto"
dst="$repo/charts/edgefleet/files/mosquitto"
mkdir -p "$dst"
cp "$src/conf.d/edgefleet.conf" "$dst/edgefleet.conf"
cp "$src/acl.conf" "$dst/acl.conf"
echo "synced $src -> $dst"
