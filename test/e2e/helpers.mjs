// Shared by the end-to-end tests: start the real binaries, wait for their ready files, stop
// them all, pick free ports.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

export class Processes {
  constructor(bin) {
    this.bin = bin;
    this.procs = [];
  }

  start(cmd, args) {
    const p = spawn(join(this.bin, cmd), args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => { stderr += d; });
    p.stderrText = () => stderr;
    this.procs.push(p);
    return p;
  }

  async stopAll() {
    for (const p of this.procs) p.kill('SIGTERM');
    await Promise.all(this.procs.map((p) => (p.exitCode !== null ? null : new Promise((r) => p.on('exit', r)))));
  }
}

// Waits for a ready file the binary writes once it listens (bounded).
export async function waitForFile(path, proc) {
  for (let i = 0; i < 1000; i++) {
    if (existsSync(path)) return readFileSync(path, 'utf8');
    if (proc.exitCode !== null) throw new Error(`${proc.spawnfile} exited: ${proc.stderrText()}`);
    await delay(10);
  }
  throw new Error(`timed out waiting for ${path}`);
}

// A free port for a test listener: chosen at random below the kernel's ephemeral range
// (32768-60999 here), because outgoing connections and listen(0) take their ports from that
// range and could grab one between this check and the router's bind (a CI flake: "Address
// already in use"). Checked on every address, whatever `host` the caller will use.
export async function freePort(host = '0.0.0.0') {
  for (let i = 0; i < 100; i++) {
    const port = 20000 + randomInt(12000);
    if (await canListen('0.0.0.0', port) && (host === '0.0.0.0' || await canListen(host, port))) return port;
  }
  throw new Error('no free port found in 20000-31999');
}

function canListen(host, port) {
  return new Promise((resolve) => {
    const s = createServer();
    s.on('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

// Starts the router on a manifest directory with `configText` as its file (in `dir`), admin
// and metrics on free ports; resolves to its ready file ({listener, admin, metrics}).
export async function startRouterOnManifests(processes, dir, manifests, configText, workers = 1) {
  const config = join(dir, 'sluice.yaml');
  writeFileSync(config, configText);
  const ready = join(dir, 'router.ready');
  const router = processes.start('sluice', ['serve', '--config', config, '--manifests', manifests,
    '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--workers', String(workers),
    '--ready-file', ready]);
  return JSON.parse(await waitForFile(ready, router));
}

// kubectl against a test API server (test/fakes/apiserver.mjs), through `kubeconfig` (default:
// the server's own), with its HOME and discovery cache inside the server's directory.
// Asynchronous on purpose: the API server answers from this same process.
export const kubectlPath = process.env.KUBECTL ?? 'kubectl';
export function kubectl(api, args, { kubeconfig = api.kubeconfig, cacheDir = 'kube-cache', input } = {}) {
  const env = { ...process.env, HOME: api.dir };
  delete env.KUBECONFIG;
  const p = spawn(kubectlPath, ['--kubeconfig', kubeconfig, '--cache-dir', join(api.dir, cacheDir),
    '--request-timeout=10s', ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => { stdout += d; });
  p.stderr.on('data', (d) => { stderr += d; });
  p.stdin.end(input ?? '');
  return new Promise((resolve, reject) => {
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// kubectl that must succeed: its stdout.
export async function kubectlOk(api, args, opts) {
  const r = await kubectl(api, args, opts);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}
