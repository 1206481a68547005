// The gallery page: the detail view, the trash, and the live event stream that keeps the
// page current. Helpers come from common.js, the grid from grid.js and the talk panel
// from talk.js, all loaded before this file.
'use strict';

(() => {
  const S2I = window.S2I;
  const { $, el, api, idPath, imageHash, when, toast, stateLine, markReady } = S2I;
  const grid = S2I.grid;
  const ui = {
    search: $('#search'), grid: $('#grid'), openTrash: $('#open-trash'), main: $('#main'),
    top: $('#top'), detail: $('#detail'), image: $('#detail-image'), prompt: $('#detail-prompt'),
    negative: $('#detail-negative'), meta: $('#detail-meta'), download: $('#detail-download'),
    favourite: $('#detail-favourite'), remove: $('#detail-delete'), close: $('#detail-close'),
    prev: $('#detail-prev'), next: $('#detail-next'),
    trash: $('#trash'), trashList: $('#trash-list'), trashStatus: $('#trash-status'),
    emptyTrash: $('#empty-trash'), closeTrash: $('#close-trash'),
  };
  const cardOf = (id) => ui.grid.querySelector(`a.card[data-id="${CSS.escape(id)}"]`);

  // ---------------------------------------------------------- detail view

  const detail = { id: null, favourite: false, seq: 0, returnFocus: null };

  function showFavourite(on) {
    detail.favourite = on;
    ui.favourite.setAttribute('aria-pressed', String(on));
    ui.favourite.textContent = on ? '★ Favourite' : '☆ Favourite';
  }

  /** A favourite changed (here or on another page): the card's star and the open view. */
  function favourite(id, on) {
    grid.setFavouriteMark(id, on);
    if (detail.id === id) showFavourite(on);
  }

  function renderDetail(d) {
    if (ui.image.getAttribute('src') !== d.file) ui.image.src = d.file;
    ui.image.alt = d.prompt || d.name || d.id;
    ui.prompt.textContent = d.prompt || `${d.name || d.id} (no prompt recorded)`;
    const negative = d.negative || (d.sidecar && d.sidecar.negative_prompt) || '';
    ui.negative.hidden = !negative;
    ui.negative.textContent = negative ? `Negative prompt: ${negative}` : '';
    ui.meta.replaceChildren(...S2I.metaRows(d));
    ui.download.href = `${d.file}?download=1`;
    ui.download.setAttribute('download', d.name || '');
    showFavourite(Boolean(d.favourite));
  }

  const inert = (on) => {
    ui.main.inert = on;
    ui.top.inert = on;
    ui.trash.inert = on;
  };

  /** ‹ and › say whether there is a neighbour to go to (one not loaded yet counts). */
  function updateSteps(id) {
    const cards = [...ui.grid.querySelectorAll('a.card')];
    const at = cards.findIndex((card) => card.dataset.id === id);
    ui.prev.disabled = at <= 0;
    ui.next.disabled = at < 0 || (at === cards.length - 1 && grid.list.next === null);
  }

  /** Opens (or moves the open view to) one image; the address follows it. */
  async function openDetail(id) {
    const seq = ++detail.seq;
    if (ui.detail.hidden) {
      if (!detail.returnFocus) detail.returnFocus = document.activeElement;
      ui.detail.hidden = false;
      inert(true);
      ui.close.focus();
    }
    detail.id = id;
    updateSteps(id);
    if (location.hash !== imageHash(id)) history.replaceState(null, '', imageHash(id));
    const known = grid.items.get(id);
    if (known) renderDetail({ ...known, sidecar: null, settings: {} });
    const res = await api(`/api/images/${idPath(id)}`);
    if (seq !== detail.seq) return; // another image was opened meanwhile
    if (res.ok) {
      renderDetail(res.data);
      return;
    }
    closeDetail();
    toast(res.status === 404 ? 'That image is not in the gallery (any more).' : res.data.error);
  }

  function closeDetail() {
    if (ui.detail.hidden) return;
    detail.seq++;
    detail.id = null;
    ui.detail.hidden = true;
    ui.image.removeAttribute('src');
    inert(false);
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    const back = detail.returnFocus;
    detail.returnFocus = null;
    if (back && back.isConnected) back.focus();
  }

  /** ←/→: the previous or next image in the list as it is shown, loading more at the end. */
  async function step(delta) {
    let cards = [...ui.grid.querySelectorAll('a.card')];
    const at = cards.findIndex((card) => card.dataset.id === detail.id);
    if (at < 0) return;
    if (at + delta >= cards.length && grid.list.next !== null) {
      await grid.loadMore();
      cards = [...ui.grid.querySelectorAll('a.card')];
    }
    const target = cards[at + delta];
    if (!target) return;
    target.scrollIntoView({ block: 'nearest' });
    detail.returnFocus = target;
    openDetail(target.dataset.id);
  }

  async function toggleFavourite() {
    const id = detail.id;
    if (!id) return;
    const method = detail.favourite ? 'DELETE' : 'POST';
    const res = await api(`/api/favourites/${idPath(id)}`, { method });
    if (!res.ok) {
      toast(res.data.error);
      return;
    }
    favourite(res.data.id || id, Boolean(res.data.favourite));
  }

  /** No "are you sure": a deleted image waits in the trash, and the message offers Undo. */
  async function deleteShown() {
    const id = detail.id;
    if (!id) return;
    const res = await api(`/api/images/${idPath(id)}`, { method: 'DELETE' });
    if (!res.ok) {
      toast(res.data.error);
      return;
    }
    const card = cardOf(id);
    const neighbour = card && (card.nextElementSibling || card.previousElementSibling);
    detail.returnFocus = neighbour || ui.search;
    closeDetail();
    grid.removeCard(id);
    toast('Moved to trash', { label: 'Undo', run: () => restore(res.data.trashed) });
  }

  /** Back from the trash; the card returns at once (and again, harmlessly, by `added`). */
  async function restore(tid) {
    const res = await api(`/api/trash/${encodeURIComponent(tid)}/restore`, { method: 'POST' });
    if (!res.ok) {
      toast(res.data.error);
      return;
    }
    toast('Restored');
    const back = await api(`/api/images/${idPath(res.data.id)}`);
    if (back.ok && grid.matches(back.data) && grid.placeCard(back.data, true)) {
      grid.updateEmpty();
    }
    if (!ui.trash.hidden) refreshTrash();
  }

  function trapFocus(event) {
    const focusable = [...ui.detail.querySelectorAll('a[href], button:not([disabled])')];
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  }

  const typing = (target) => target instanceof HTMLElement
    && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));

  function onDetailKey(event) {
    const keys = {
      Escape: closeDetail, ArrowLeft: () => step(-1), ArrowRight: () => step(1),
      f: toggleFavourite, F: toggleFavourite,
    };
    if (event.key === 'Tab') trapFocus(event);
    else if (keys[event.key] && (event.key === 'Escape' || !typing(event.target))) {
      event.preventDefault();
      keys[event.key]();
    }
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (!ui.detail.hidden) {
      onDetailKey(event);
    } else if (event.key === 'Escape' && !ui.trash.hidden) {
      event.preventDefault();
      closeTrash();
    } else if (event.key === '/' && !typing(event.target)) {
      event.preventDefault();
      ui.search.focus();
      ui.search.select();
    }
  }

  /** Cards and request pictures are links to #image=…; a plain click opens in place. */
  function onClick(event) {
    const link = event.target.closest('a.card, a.picture');
    const modified = event.ctrlKey || event.metaKey || event.shiftKey || event.altKey;
    if (!link || event.button !== 0 || modified) return;
    event.preventDefault();
    detail.returnFocus = link;
    openDetail(link.dataset.id);
  }

  function hashId() {
    const match = /^#image=(.+)$/.exec(location.hash);
    if (!match) return null;
    try {
      return decodeURIComponent(match[1]);
    } catch (err) {
      return null;
    }
  }

  function onHash() {
    const id = hashId();
    if (id && id !== detail.id) openDetail(id);
    else if (!id) closeDetail();
  }

  function startDetail() {
    document.addEventListener('keydown', onKey);
    document.addEventListener('click', onClick);
    window.addEventListener('hashchange', onHash);
    ui.close.addEventListener('click', closeDetail);
    ui.favourite.addEventListener('click', toggleFavourite);
    ui.remove.addEventListener('click', deleteShown);
    ui.prev.addEventListener('click', () => step(-1));
    ui.next.addEventListener('click', () => step(1));
    ui.detail.addEventListener('click', (event) => {
      if (event.target === ui.detail) closeDetail();
    });
    if (hashId()) onHash();
  }

  // ------------------------------------------------------------------ trash

  function trashRow(item) {
    const label = item.prompt || item.id;
    const button = el('button', { type: 'button', class: 'restore', text: 'Restore' });
    button.addEventListener('click', () => restore(item.tid));
    return el('li', { class: 'trash-item', 'data-tid': item.tid, 'data-id': item.id },
      el('img', { src: item.file, alt: label, loading: 'lazy', decoding: 'async' }),
      el('div', { class: 'trash-info' }, el('p', { class: 'prompt', text: label }),
        el('p', { class: 'when', text: `Deleted ${when(Number(item.deleted))}` })),
      button);
  }

  async function refreshTrash() {
    const res = await api('/api/trash');
    if (ui.trash.hidden) return;
    if (!res.ok) {
      ui.trashStatus.textContent = res.data.error;
      return;
    }
    const trashed = res.data.items || [];
    ui.trashList.replaceChildren(...trashed.map(trashRow));
    ui.trashStatus.textContent = trashed.length ? '' : 'The trash is empty.';
    ui.emptyTrash.disabled = !trashed.length;
  }

  function openTrash() {
    ui.trash.hidden = false;
    ui.openTrash.setAttribute('aria-expanded', 'true');
    ui.closeTrash.focus();
    refreshTrash();
  }

  function closeTrash() {
    ui.trash.hidden = true;
    ui.openTrash.setAttribute('aria-expanded', 'false');
    ui.openTrash.focus();
  }

  async function emptyTrash() {
    const n = ui.trashList.children.length;
    const what = n === 1 ? 'the 1 item' : `all ${n} items`;
    if (!window.confirm(`Delete ${what} in the trash for good? This cannot be undone.`)) return;
    const res = await api('/api/trash', { method: 'DELETE' });
    if (!res.ok) {
      toast(res.data.error);
      return;
    }
    toast(`Removed ${res.data.removed} for good`);
    refreshTrash();
  }

  function startTrash() {
    ui.openTrash.addEventListener('click', () => (ui.trash.hidden ? openTrash() : closeTrash()));
    ui.closeTrash.addEventListener('click', closeTrash);
    ui.emptyTrash.addEventListener('click', emptyTrash);
  }

  // ------------------------------------------------------------ live events

  const live = { lost: false, line: 'Connecting…', state: '' };

  function showState(state, text) {
    live.state = state || '';
    live.line = text || state || '';
    stateLine(live.line, live.state);
  }

  const parse = (event) => {
    try {
      return JSON.parse(event.data);
    } catch (err) {
      return null;
    }
  };

  function onAdded(item) {
    if (item && typeof item.id === 'string' && grid.matches(item) && grid.placeCard(item, true)) {
      grid.updateEmpty();
    }
  }

  function onRemoved(data) {
    if (!data || typeof data.id !== 'string') return;
    grid.removeCard(data.id);
    if (detail.id !== data.id) return;
    closeDetail();
    toast('This image was deleted.');
  }

  function onUpdated(item) {
    if (!item || typeof item.id !== 'string') return;
    if (grid.matches(item)) grid.placeCard(item, true);
    else grid.removeCard(item.id);
    grid.updateEmpty();
    if (detail.id === item.id) openDetail(item.id);
  }

  /** EventSource reconnects by itself; what was missed meanwhile comes with a fresh list. */
  function startEvents() {
    const source = new EventSource('/api/events');
    const on = (name, handler) =>
      source.addEventListener(name, (event) => handler(parse(event)));
    source.onopen = () => {
      if (live.lost) {
        live.lost = false;
        stateLine(live.line, live.state);
        grid.reload();
      }
      markReady('events');
    };
    source.onerror = () => {
      live.lost = true;
      const closed = source.readyState === EventSource.CLOSED;
      stateLine(closed ? 'Live updates stopped; reload the page.' : 'reconnecting…', 'offline');
    };
    on('added', onAdded);
    on('removed', onRemoved);
    on('updated', onUpdated);
    on('favourite', (d) => d && favourite(d.id, Boolean(d.favourite)));
    on('trash', () => !ui.trash.hidden && refreshTrash());
    on('state', (d) => d && showState(d.state, d.detail));
    on('daemon', (d) => S2I.talk.onDaemon(d));
  }

  async function startStatus() {
    const res = await api('/api/status');
    if (!res.ok) {
      S2I.talk.say(res.data.error);
      return;
    }
    showState(res.data.state, res.data.detail);
    S2I.talk.start(res.data);
  }

  grid.start();
  startDetail();
  startTrash();
  startStatus();
  startEvents();
  grid.reload();
})();
