// What every part of the gallery page shares: building nodes, talking to the API, the
// short messages at the bottom, and how an image's record is laid out for reading.
//
// Everything shown from the server is untrusted text (a prompt is whatever somebody
// said or typed), so nodes are built with createElement/textContent only; the
// content security policy forbids inline script and style, so none is used.
'use strict';

window.S2I = (() => {
  const $ = (selector) => document.querySelector(selector);

  /** An element with attributes and children; strings become text nodes, never HTML. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  /** An image id as URL path segments, each percent-encoded (the API's contract). */
  const idPath = (id) => id.split('/').map(encodeURIComponent).join('/');
  /** The page address of an image's detail view (what notifications link to). */
  const imageHash = (id) => `#image=${encodeURIComponent(id)}`;

  /** fetch with the answer's JSON; a failure carries the server's `error` sentence. */
  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { credentials: 'same-origin', ...options });
    } catch (err) {
      const error = 'The gallery server cannot be reached; is it still running?';
      return { ok: false, status: 0, data: { error } };
    }
    let data = {};
    try {
      data = await response.json();
    } catch (err) {
      data = {};
    }
    if (data === null || typeof data !== 'object') data = {};
    if (!response.ok && typeof data.error !== 'string') {
      data.error = `The server answered ${response.status} ${response.statusText}`.trim();
    }
    return { ok: response.ok, status: response.status, data };
  }

  const pad = (n) => String(n).padStart(2, '0');
  const localDay = (date) =>
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;

  /** "Today", "Yesterday", else the long date in the reader's own language. */
  function dayLabel(day) {
    const now = new Date();
    const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
    if (day === localDay(now)) return 'Today';
    if (day === localDay(yesterday)) return 'Yesterday';
    const [y, m, d] = day.split('-').map(Number);
    if (!y || !m || !d) return day;
    const style = { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' };
    return new Date(y, m - 1, d).toLocaleDateString(undefined, style);
  }

  const when = (epochS) =>
    (Number.isFinite(epochS) ? new Date(epochS * 1000).toLocaleString() : '');

  function formatBytes(n) {
    if (!Number.isFinite(n)) return '';
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  let toastTimer = 0;
  /** A short message at the bottom; `action` ({label, run}) adds a button such as Undo. */
  function toast(message, action) {
    const box = $('#toast');
    clearTimeout(toastTimer);
    const parts = [el('span', { text: message })];
    if (action) {
      const button = el('button', { type: 'button', class: 'undo', text: action.label });
      button.addEventListener('click', () => {
        box.hidden = true;
        action.run();
      });
      parts.push(' · ', button);
    }
    box.replaceChildren(...parts);
    box.hidden = false;
    toastTimer = setTimeout(() => { box.hidden = true; }, action ? 10000 : 6000);
  }

  /** The one line under the header that says what the daemon is doing. */
  function stateLine(text, name) {
    const line = $('#live-state');
    line.textContent = text;
    if (name !== undefined) line.dataset.state = name;
  }

  const readyParts = new Set();
  /** Tests wait for body[data-ready]: the first page is shown and live events flow. */
  function markReady(part) {
    readyParts.add(part);
    if (readyParts.has('list') && readyParts.has('events')) document.body.dataset.ready = '1';
  }

  // ----------------------------------------------------- an image's record

  function row(label, value) {
    if (value === undefined || value === null || value === '') return [];
    const shown = typeof value === 'object' ? value : String(value);
    return [el('dt', { text: label }), el('dd', {}, shown)];
  }

  function table(pairs, format) {
    const rows = pairs.map(([key, value]) =>
      el('tr', {}, el('th', { scope: 'row', text: key }), el('td', { text: format(value) })));
    return el('table', {}, ...rows);
  }

  function moderationNode(m) {
    const flagged = Array.isArray(m.flagged) && m.flagged.length
      ? `flagged: ${m.flagged.join(', ')}` : 'nothing flagged';
    const verdict = m.allowed === false ? 'refused' : 'allowed';
    const scores = Object.entries(m.scores || {}).sort((a, b) => b[1] - a[1]);
    const summary = [m.backend, verdict, flagged].filter(Boolean).join(' · ');
    return el('div', {}, el('p', { text: summary }),
      scores.length ? table(scores, (v) => Number(v).toFixed(3)) : null);
  }

  function timingsNode(timings) {
    const pairs = Object.entries(timings).map(([key, value]) => [key.replace(/_s$/, ''), value]);
    return table(pairs, (v) => `${Number(v).toFixed(2)} s`);
  }

  function sidecarRows(s) {
    const out = [
      ...row('Device', [s.device, s.dtype].filter(Boolean).join(' / ')),
      ...row('Source', [s.source, s.origin].filter(Boolean).join(' · ')),
    ];
    if (s.wake) {
      out.push(...row('Wake word', `${s.wake.model} (score ${Number(s.wake.score).toFixed(2)})`));
    }
    out.push(...row('Transcript', s.transcript), ...row('Language', s.language));
    if (s.moderation) out.push(...row('Moderation', moderationNode(s.moderation)));
    if (s.timings && Object.keys(s.timings).length) {
      out.push(...row('Timings', timingsNode(s.timings)));
    }
    out.push(...row('Request', s.id), ...row('speech2image', s.speech2image));
    return out;
  }

  /** dt/dd nodes: the sidecar's record, else the A1111 settings of a file made elsewhere. */
  function metaRows(d) {
    const s = d.sidecar && typeof d.sidecar === 'object' ? d.sidecar : null;
    const size = s && Array.isArray(s.size) ? s.size.join(' × ') : `${d.width} × ${d.height}`;
    const out = [];
    if (s) {
      out.push(...row('Seed', s.seed), ...row('Model', s.model), ...row('Steps', s.steps),
        ...row('Sampler', s.sampler), ...row('Guidance', s.guidance));
    }
    out.push(...row('Size', size), ...row('Time', when(d.time)));
    if (s) {
      out.push(...sidecarRows(s));
    } else {
      for (const [key, value] of Object.entries(d.settings || {})) out.push(...row(key, value));
    }
    const file = [d.name || d.id, d.format, formatBytes(d.bytes)].filter(Boolean).join(' · ');
    out.push(...row('File', file));
    return out;
  }

  return {
    $, el, idPath, imageHash, api, pad, localDay, dayLabel, when, toast, stateLine, markReady,
    metaRows,
  };
})();
