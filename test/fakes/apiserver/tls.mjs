// A throwaway CA and a server certificate for 127.0.0.1/localhost made with the openssl CLI,
// and kubeconfig files that trust that CA.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { toYaml } from './yaml.mjs';

const run = promisify(execFile);

async function openssl(args) {
  try {
    await run('openssl', args);
  } catch (e) {
    throw new Error(`openssl ${args[0]} failed: ${e.stderr || e.message}`);
  }
}

// Writes ca.crt, ca.key, server.crt, server.key into dir; returns their paths and PEM text.
export async function makeCertificates(dir) {
  const f = (name) => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '7',
    '-subj', '/CN=sluice-fake-apiserver-ca', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await openssl(['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'),
    '-subj', '/CN=sluice-fake-apiserver']);
  writeFileSync(f('server.ext'), ['basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth',
    'subjectAltName=IP:127.0.0.1,DNS:localhost', ''].join('\n'));
  await openssl(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'),
    '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '7', '-extfile', f('server.ext'),
    '-out', f('server.crt')]);
  return {
    caFile: f('ca.crt'), certFile: f('server.crt'), keyFile: f('server.key'),
    ca: readFileSync(f('ca.crt'), 'utf8'), cert: readFileSync(f('server.crt'), 'utf8'),
    key: readFileSync(f('server.key'), 'utf8'),
  };
}

// user: { token } or { tokenFile }; cluster CA by file path, or inline when inlineCa is set.
export function writeKubeconfig(path, { server, caFile, user, inlineCa = false, namespace = 'default' }) {
  const cluster = { server };
  if (inlineCa) cluster['certificate-authority-data'] = readFileSync(caFile).toString('base64');
  else cluster['certificate-authority'] = caFile;
  const config = {
    apiVersion: 'v1', kind: 'Config',
    clusters: [{ name: 'fake', cluster }],
    users: [{ name: 'fake', user }],
    contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake', namespace } }],
    'current-context': 'fake',
    preferences: {},
  };
  writeFileSync(path, toYaml(config), { mode: 0o600 });
  return path;
}
