// Shared by the end-to-end tests: start the real binaries, wait for their ready files, stop
// them all, pick free ports.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
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

export function freePort(host) {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, host, () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
