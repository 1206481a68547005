// The grid of thumbnails: newest first, grouped by day, one page at a time as the end
// scrolls into view, filtered by the search box; live events place single cards in it.
'use strict';

window.S2I.grid = (() => {
  const { $, el, api, imageHash, localDay, dayLabel, markReady } = window.S2I;
  const PAGE = 60;
  const SEARCH_DEBOUNCE_MS = 200;
  const ui = { search: $('#search'), grid: $('#grid'), empty: $('#empty'), more: $('#more') };
  const byId = (id) => ui.grid.querySelector(`a.card[data-id="${CSS.escape(id)}"]`);
  const list = { q: '', words: [], next: null, loading: false, generation: 0, failed: '' };
  const items = new Map(); // id -> summary, for what is on the page

  const newer = (a, b) => a.time > b.time || (a.time === b.time && a.id > b.id);
  const cardKey = (card) => ({ time: Number(card.dataset.time), id: card.dataset.id });
  /** The server's search, client side, for images that arrive live: every word, anywhere. */
  const matches = (item) => {
    const text = `${item.prompt || ''} ${item.id}`.toLowerCase();
    return list.words.every((word) => text.includes(word));
  };

  function makeCard(item) {
    const label = item.prompt || item.name || item.id;
    const href = imageHash(item.id);
    return el('a', { class: 'card', href, 'data-id': item.id, 'data-time': item.time },
      el('img', {
        class: 'thumb', src: item.thumb, alt: label, loading: 'lazy', decoding: 'async',
        width: item.width || null, height: item.height || null,
      }),
      el('span', { class: item.favourite ? 'fav on' : 'fav', title: 'Favourite', text: '★' }),
      el('span', { class: 'prompt', text: label }));
  }

  function daySection(day) {
    const found = ui.grid.querySelector(`section.day[data-day="${CSS.escape(day)}"]`);
    if (found) return found.querySelector('.cards');
    const title = dayLabel(day);
    const section = el('section', { class: 'day', 'data-day': day, 'aria-label': title },
      el('h2', { text: title }), el('div', { class: 'cards' }));
    const later = [...ui.grid.children].find((s) => s.dataset.day < day);
    ui.grid.insertBefore(section, later || null);
    return section.querySelector('.cards');
  }

  /** Puts a card where newest-first order wants it; false when a later page will bring it. */
  function placeCard(item, live = false) {
    if (!item || typeof item.id !== 'string') return false;
    const entry = { ...item, time: Number(item.time) || 0 };
    const last = ui.grid.querySelector('section.day:last-child a.card:last-child');
    const lastCard = last && last.dataset.id !== item.id ? last : null;
    if (live && list.next !== null && lastCard && newer(cardKey(lastCard), entry)) return false;
    removeCard(item.id, false);
    const cards = daySection(String(item.day || localDay(new Date(entry.time * 1000))));
    const tail = cards.lastElementChild;
    const before = tail && newer(cardKey(tail), entry)
      ? null : [...cards.children].find((c) => newer(entry, cardKey(c)));
    cards.insertBefore(makeCard(entry), before || null);
    items.set(item.id, entry);
    return true;
  }

  function removeCard(id, update = true) {
    const card = byId(id);
    items.delete(id);
    if (card) {
      const section = card.closest('section.day');
      card.remove();
      if (section && !section.querySelector('a.card')) section.remove();
    }
    if (update) updateEmpty();
  }

  function updateEmpty() {
    ui.empty.hidden = Boolean(ui.grid.querySelector('a.card')) || list.loading;
    if (list.failed) ui.empty.textContent = `Could not load the images: ${list.failed}`;
    else if (list.q) ui.empty.textContent = `No image matches “${list.q}”.`;
    else ui.empty.textContent = 'No images yet: say the wake word, or type what to draw above.';
  }

  function setFavouriteMark(id, on) {
    const card = byId(id);
    if (card) card.querySelector('.fav').classList.toggle('on', on);
    const item = items.get(id);
    if (item) item.favourite = on;
  }

  /** The first page (fresh: a new search) or the next one; a newer search drops older answers. */
  async function loadPage(fresh) {
    if (!fresh && (list.loading || list.next === null)) return;
    const generation = fresh ? ++list.generation : list.generation;
    list.loading = true;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (list.q) params.set('q', list.q);
    if (!fresh && list.next) params.set('before', list.next);
    const res = await api(`/api/images?${params}`);
    if (generation !== list.generation) return;
    list.loading = false;
    list.failed = res.ok ? '' : res.data.error;
    if (fresh) {
      ui.grid.replaceChildren();
      items.clear();
    }
    if (res.ok) {
      for (const item of res.data.images || []) placeCard(item);
      list.next = res.data.next ?? null;
    }
    updateEmpty();
    markReady('list');
    requestAnimationFrame(nearTheEnd);
  }

  const reload = () => loadPage(true);
  const loadMore = () => loadPage(false);

  /** A page that does not fill the screen leaves the sentinel in view: no new intersection. */
  function nearTheEnd() {
    const top = ui.more.getBoundingClientRect().top;
    if (list.next !== null && top < window.innerHeight + 800) loadMore();
  }

  function startSearch() {
    let timer = 0;
    const apply = () => {
      clearTimeout(timer);
      const q = ui.search.value.trim();
      if (q === list.q) return;
      list.q = q;
      list.words = q.toLowerCase().split(/\s+/).filter(Boolean);
      reload();
    };
    ui.search.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(apply, SEARCH_DEBOUNCE_MS);
    });
    ui.search.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') apply();
      if (event.key !== 'Escape') return;
      event.preventDefault();
      event.stopPropagation();
      if (!ui.search.value) ui.search.blur();
      ui.search.value = '';
      apply();
    });
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) loadMore();
    }, { rootMargin: '800px 0px' });
    observer.observe(ui.more);
  }

  return {
    list, items, matches, placeCard, removeCard, updateEmpty, setFavouriteMark, reload, loadMore,
    start: startSearch,
  };
})();
