// The vmfork cluster page: renders the node's live feed (GET /events, server-sent events;
// the message format is in ClusterPage's javadoc). Plain JS, no build step, no network
// beyond this node.
'use strict';

const LOG_LIMIT = 200;
const RETRY_MS = 2000;

const state = { self: null, hosts: [], members: [], vms: new Map() };
let source = null;
let renderQueued = false;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === 'class') e.className = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function bytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(n % (1 << 30) ? 1 : 0) + ' GiB';
  if (n >= 1 << 20) return Math.round(n / (1 << 20)) + ' MiB';
  if (n >= 1 << 10) return Math.round(n / (1 << 10)) + ' KiB';
  return n + ' B';
}

function hostName(id) {
  const h = state.hosts.find((x) => x.host_id === id);
  return h ? h.host_name : 'host ' + id;
}

// A stable hue per host, so that a VM's host reads at a glance everywhere.
function hostHue(id) {
  return (id * 67 + 200) % 360;
}

function hostTag(id) {
  return el('span', { class: 'hosttag', style: '--hue:' + hostHue(id), data: { hostId: id } }, hostName(id));
}

// ---- feed ----

function setFeed(s, text) {
  const f = $('feed-status');
  f.dataset.state = s;
  f.textContent = text;
  $('feed-banner').hidden = s !== 'lost';
}

function connect() {
  setFeed('connecting', 'connecting\u2026');
  source = new EventSource('events');
  source.addEventListener('snapshot', (e) => {
    const d = JSON.parse(e.data);
    state.self = d.self_host_id;
    state.hosts = d.hosts;
    state.members = d.members;
    state.vms = new Map(d.vms.map((v) => [v.id, v]));
    setFeed('live', 'live');
    logLine({ kind: 'SNAPSHOT', time: d.time }, 'feed connected: ' + d.hosts.length + ' hosts, '
        + d.vms.length + ' VMs');
    queueRender();
  });
  source.addEventListener('hosts', (e) => {
    const d = JSON.parse(e.data);
    state.hosts = d.hosts;
    state.members = d.members;
    queueRender();
  });
  source.addEventListener('vm', (e) => applyEvent(JSON.parse(e.data)));
  source.onerror = () => {
    setFeed('lost', 'feed lost \u2014 reconnecting');
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. the node answered 503): try again ourselves.
      source.close();
      setTimeout(connect, RETRY_MS);
    }
  };
}

const ENDED = new Set(['EXITED', 'CRASHED', 'STOPPED', 'LOST']);

function applyEvent(ev) {
  if (ev.kind === 'KNOWN') {
    // A VM of a host this node's view listed after the snapshot: not a lifecycle event.
    state.vms.set(ev.vm.id, ev.vm);
    queueRender();
    return;
  }
  if (ev.kind === 'LAUNCHED' || ev.kind === 'FORKED') {
    state.vms.set(ev.vm.id, ev.vm);
  } else if (ev.kind === 'READY') {
    const v = state.vms.get(ev.vm_id);
    if (v) v.ready = true;
  } else if (ENDED.has(ev.kind)) {
    state.vms.delete(ev.vm_id);
  }
  logLine(ev, describe(ev));
  queueRender();
}

function describe(ev) {
  const v = ev.vm;
  switch (ev.kind) {
    case 'LAUNCHED': return 'booted ' + v.image + ' (type ' + v.vm_type + ', ' + bytes(v.memory) + ')';
    case 'READY': return 'ready to serve';
    case 'FORKED': return (v.origin === 'clone' ? 'clone' : 'child') + ' of ' + v.parent + ', generation '
        + v.fork_generation + ', type ' + v.vm_type;
    case 'CLONE_FAILED': return 'a clone was not started: ' + ev.detail;
    case 'EXITED': return 'exited with ' + ev.exit_code + (ev.detail ? ' (' + ev.detail + ')' : '');
    default: return ev.detail || '';
  }
}

function logLine(ev, text) {
  const t = new Date(ev.time || Date.now());
  const li = el('li', { class: 'entry kind-' + ev.kind.toLowerCase(), data: { kind: ev.kind, vmId: ev.vm_id || '' } },
      el('time', {}, t.toLocaleTimeString([], { hour12: false })),
      el('span', { class: 'kind' }, ev.kind.toLowerCase()),
      ev.vm_id ? el('code', { class: 'vmid' }, ev.vm_id) : null,
      ev.host_id !== undefined ? hostTag(ev.host_id) : null,
      el('span', { class: 'what' }, text));
  const log = $('log');
  log.prepend(li);
  while (log.children.length > LOG_LIMIT) log.lastElementChild.remove();
}

// ---- rendering (everything but the log is redrawn from the state, once per frame) ----

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  renderSummary();
  renderHosts();
  renderTree();
  renderVms();
}

function renderSummary() {
  const vms = [...state.vms.values()];
  const count = (o) => vms.filter((v) => v.origin === o).length;
  $('summary').replaceChildren(
      el('span', {}, el('b', { id: 'host-count' }, state.hosts.length), ' hosts'),
      el('span', {}, el('b', { id: 'vm-count' }, vms.length), ' VMs'),
      el('span', { class: 'origin booted' }, count('booted') + ' booted'),
      el('span', { class: 'origin child' }, count('child') + ' children'),
      el('span', { class: 'origin clone' }, count('clone') + ' clones'),
      state.self !== null ? el('span', { class: 'dim' }, 'this page: ' + hostName(state.self)) : null);
}

function bar(metric, used, total, text) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const level = pct >= 90 ? 'high' : pct >= 70 ? 'mid' : 'low';
  return el('div', { class: 'metric', data: { metric, used, total } },
      el('div', { class: 'label' }, el('span', {}, metric), el('span', { class: 'value' }, text)),
      el('div', { class: 'bar' }, el('div', { class: 'fill ' + level, style: 'width:' + pct.toFixed(1) + '%' })));
}

// Where a host's guests run: "kvm" (hardware virtualisation) or "process" (a confined host
// process); "" from a node of an older version, which does not say.
function platformTag(h) {
  const known = h.platform === 'kvm' || h.platform === 'process';
  return el('span', { class: 'platform ' + (known ? h.platform : 'unknown'),
    title: h.platform === 'kvm' ? 'guests run in KVM VMs (hardware virtualisation)'
      : h.platform === 'process' ? 'guests run in confined host processes (no /dev/kvm)'
        : 'this host\'s node does not say where its guests run' }, h.platform || 'platform?');
}

function renderHosts() {
  const vms = [...state.vms.values()];
  const cards = state.hosts.map((h) => {
    const c = h.capacity;
    const mine = vms.filter((v) => v.host_id === h.host_id);
    const down = h.status !== 'up' || !h.reachable;
    return el('article', { class: 'host' + (down ? ' down' : '') + (h.self ? ' self' : ''), id: 'host-' + h.host_id,
        style: '--hue:' + hostHue(h.host_id),
        data: { hostId: h.host_id, status: h.status, reachable: h.reachable, vms: h.vms, platform: h.platform } },
      el('div', { class: 'head' },
          el('span', { class: 'name' }, h.host_name),
          el('span', { class: 'id' }, 'host ' + h.host_id),
          platformTag(h),
          h.self ? el('span', { class: 'self-tag' }, 'this node') : null,
          el('span', { class: 'status ' + (down ? 'bad' : 'ok') }, h.reachable ? h.status : 'unreachable')),
      el('div', { class: 'addr' }, h.address),
      bar('VMs', h.vms, c.vm_slots, h.vms + ' / ' + c.vm_slots),
      bar('memory', h.memory_used, c.guest_memory, bytes(h.memory_used) + ' / ' + bytes(c.guest_memory)),
      bar('vCPUs', h.vcpus_used, c.vcpus, h.vcpus_used + ' / ' + c.vcpus),
      el('div', { class: 'chips' }, ...mine.map((v) => el('span', {
        class: 'chip origin ' + v.origin + (v.ready ? ' ready' : ''), title: v.id + ' ' + v.origin + ' ' + v.state },
      v.id.slice(-4)))));
  });
  $('hosts').replaceChildren(...cards);
  $('members').replaceChildren(...state.members.map((m) =>
    el('span', { class: 'member', data: { status: m.status } }, 'member without a host: ' + m.address + ' (' + m.status
        + (m.reachable ? '' : ', unreachable') + ')')));
}

function vmLabel(v) {
  return el('span', { class: 'vm origin ' + v.origin, data: { origin: v.origin } },
      el('span', { class: 'badge' }, v.origin),
      el('code', {}, v.id),
      hostTag(v.host_id),
      el('span', { class: 'state state-' + v.state.toLowerCase() }, v.state.toLowerCase() + (v.ready ? ', ready' : '')),
      el('span', { class: 'dim' }, 'type ' + v.vm_type + ' \u00b7 gen ' + v.fork_generation));
}

function renderTree() {
  const children = new Map();
  const roots = [];
  const byId = (a, b) => (a.id.length - b.id.length) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  for (const v of [...state.vms.values()].sort(byId)) {
    if (v.parent && state.vms.has(v.parent)) {
      if (!children.has(v.parent)) children.set(v.parent, []);
      children.get(v.parent).push(v);
    } else {
      roots.push(v);
    }
  }
  const node = (v) => {
    const kids = children.get(v.id) || [];
    return el('li', { class: 'node ' + v.origin, id: 'tree-' + v.id, data: { vmId: v.id, origin: v.origin, hostId: v.host_id } },
        vmLabel(v),
        v.parent && !state.vms.has(v.parent) ? el('span', { class: 'dim orphan' }, ' (parent ' + v.parent + ' ended)') : null,
        kids.length ? el('ul', {}, ...kids.map(node)) : null);
  };
  $('tree').replaceChildren(roots.length ? el('ul', { class: 'roots' }, ...roots.map(node))
      : el('div', { class: 'empty' }, 'No VMs yet: launch one, and fork it.'));
}

function renderVms() {
  const vms = [...state.vms.values()].sort((a, b) => (a.id.length - b.id.length) || (a.id < b.id ? -1 : 1));
  $('vms').replaceChildren(...vms.map((v) => el('tr', {
    id: 'vm-' + v.id, class: 'origin ' + v.origin,
    data: { vmId: v.id, hostId: v.host_id, origin: v.origin, state: v.state, parent: v.parent || '', ready: v.ready } },
  el('td', {}, el('code', {}, v.id)),
  el('td', {}, hostTag(v.host_id)),
  el('td', {}, el('span', { class: 'state state-' + v.state.toLowerCase() }, v.state.toLowerCase()),
      v.ready ? el('span', { class: 'ready-tag' }, 'ready') : null),
  el('td', {}, v.vm_type),
  el('td', {}, el('span', { class: 'badge origin ' + v.origin }, v.origin)),
  el('td', {}, v.fork_generation),
  el('td', {}, v.parent ? el('code', {}, v.parent) : '\u2014'),
  el('td', {}, v.image),
  el('td', {}, bytes(v.memory)))));
  $('no-vms').hidden = vms.length > 0;
}

connect();
