// Open watch streams: newline-delimited JSON events on a chunked 200 response, filtered the way
// the real watch cache filters them (an object that starts or stops matching a selector is
// seen as ADDED or DELETED), with optional periodic and on-demand BOOKMARK events.
import { groupVersion } from './registry.mjs';
import { failureStatus } from './errors.mjs';

export class WatchHub {
  constructor(store, { bookmarkIntervalMs = 1000 } = {}) {
    this.store = store;
    this.watchers = new Set();
    store.listeners.add((event) => { for (const w of this.watchers) w.deliver(event); });
    this.timer = setInterval(() => this.sendBookmarks(), bookmarkIntervalMs);
    this.timer.unref();
  }

  // spec: { res, def, key, version, namespace, filter, bookmarks, timeoutMs }
  open(spec) {
    const w = new Watcher(this, spec);
    this.watchers.add(w);
    return w;
  }

  sendBookmarks() {
    for (const w of this.watchers) if (w.bookmarks) w.bookmark();
  }

  // Ends matching streams cleanly, as the real server does on timeout or shutdown.
  closeAll(predicate = () => true) {
    for (const w of [...this.watchers]) if (predicate(w)) w.close();
  }

  get count() {
    return this.watchers.size;
  }

  dispose() {
    clearInterval(this.timer);
    this.closeAll();
  }
}

class Watcher {
  constructor(hub, { res, def, key, version, namespace, filter, bookmarks, timeoutMs }) {
    Object.assign(this, { hub, res, def, key, version, namespace, filter, bookmarks });
    this.apiVersion = groupVersion(def.group, version);
    this.closed = false;
    // Headers go out at once: clients treat the 200 as "watch established".
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    res.on('close', () => this.close());
    if (timeoutMs > 0) this.timeout = setTimeout(() => this.close(), timeoutMs);
  }

  matches(obj) {
    if (this.namespace && obj.metadata.namespace !== this.namespace) return false;
    return !this.filter || this.filter(obj);
  }

  deliver(event) {
    if (event.key !== this.key) return;
    const now = event.type !== 'DELETED' && this.matches(event.obj);
    const before = event.type !== 'ADDED' && event.old !== undefined && this.matches(event.old);
    if (event.type === 'DELETED') {
      if (before) this.send('DELETED', event.obj);
    } else if (now) {
      this.send(before ? 'MODIFIED' : 'ADDED', event.obj);
    } else if (before) {
      // Left the selector: the previous state, stamped with this event's resourceVersion.
      const old = event.old;
      this.send('DELETED', { ...old, metadata: { ...old.metadata, resourceVersion: String(event.rv) } });
    }
  }

  send(type, obj) {
    if (this.closed) return;
    this.res.write(`${JSON.stringify({ type, object: { ...obj, apiVersion: this.apiVersion } })}\n`);
  }

  bookmark(annotations) {
    if (this.closed) return;
    const metadata = { resourceVersion: String(this.hub.store.rv), ...(annotations ? { annotations } : {}) };
    const object = { kind: this.def.kind, apiVersion: this.apiVersion, metadata };
    this.res.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`);
  }

  error(code, reason, message) {
    if (this.closed) return;
    this.res.write(`${JSON.stringify({ type: 'ERROR', object: failureStatus(code, reason, message) })}\n`);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timeout);
    this.hub.watchers.delete(this);
    if (!this.res.writableEnded) this.res.end();
  }
}
