// The object store: one global resourceVersion counter (as etcd's revision), objects per
// resource in key order (namespace, name) as etcd lists them, a bounded event history that
// watches resume from, and the list snapshots that keep a paged list consistent.
//
// Stored objects are never mutated once committed: writers build a new object and commit it,
// so lists, snapshots and history entries can share references safely.

export class Store {
  constructor({ historySize = 10000, snapshotLimit = 64 } = {}) {
    this.rv = 0;
    this.tables = new Map(); // def key -> { objects: Map("ns/name" -> obj), sorted: keys | null }
    this.history = [];
    this.head = 0; // history[head..] are the retained events, oldest first
    this.compactedRv = 0; // events with rv <= compactedRv are gone
    this.historySize = historySize;
    this.listeners = new Set();
    this.snapshots = new Map();
    this.snapshotLimit = snapshotLimit;
    this.nextSnapshotId = 1;
  }

  table(key) {
    let t = this.tables.get(key);
    if (!t) {
      t = { objects: new Map(), sorted: null };
      this.tables.set(key, t);
    }
    return t;
  }

  get(key, namespace, name) {
    return this.tables.get(key)?.objects.get(`${namespace ?? ''}/${name}`);
  }

  // Objects of one resource in key order, in one namespace or (namespace falsy) all.
  list(key, namespace) {
    const t = this.tables.get(key);
    if (!t) return [];
    if (!t.sorted) t.sorted = [...t.objects.keys()].sort();
    const prefix = namespace ? `${namespace}/` : '';
    const out = [];
    for (const k of t.sorted) if (!prefix || k.startsWith(prefix)) out.push(t.objects.get(k));
    return out;
  }

  // Stamps obj with the next resourceVersion, stores (or, for DELETED, removes) it, records the
  // event and tells the listeners. `old` is the object it replaces, if any.
  commit(key, type, obj, old) {
    const rv = ++this.rv;
    const stamped = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    const t = this.table(key);
    const objKey = `${stamped.metadata.namespace ?? ''}/${stamped.metadata.name}`;
    if (type === 'DELETED') {
      t.objects.delete(objKey);
      t.sorted = null;
    } else {
      if (!t.objects.has(objKey)) t.sorted = null;
      t.objects.set(objKey, stamped);
    }
    const event = { type, key, rv, obj: stamped, old };
    this.record(event);
    for (const listener of this.listeners) listener(event);
    return stamped;
  }

  record(event) {
    this.history.push(event);
    if (this.history.length - this.head <= this.historySize) return;
    this.compactedRv = this.history[this.head].rv;
    this.history[this.head++] = undefined;
    if (this.head >= this.historySize) {
      this.history = this.history.slice(this.head);
      this.head = 0;
    }
  }

  // Events after `rv`, oldest first, or null when some of them were compacted away.
  eventsAfter(rv) {
    if (rv < this.compactedRv) return null;
    let lo = this.head;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.history[mid].rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    return this.history.slice(lo);
  }

  // Forgets every event and list snapshot: resuming from any older resourceVersion fails.
  compact() {
    this.compactedRv = this.rv;
    this.history = [];
    this.head = 0;
    this.snapshots.clear();
  }

  // scope names the list (resource and namespace) so a token cannot continue another one.
  saveSnapshot(items, rv, scope) {
    const id = this.nextSnapshotId++;
    this.snapshots.set(id, { items, rv, scope });
    if (this.snapshots.size > this.snapshotLimit) this.snapshots.delete(this.snapshots.keys().next().value);
    return id;
  }

  snapshot(id) {
    return this.snapshots.get(id);
  }
}
