// Talking to the daemon from the page: the microphone button, the typed prompt, and
// the log of this page's requests as the daemon's events come in for them.
//
// A request from the page runs through the same stages and queue as a spoken wake
// word; the server answers 202 with its id at once, and everything after that arrives
// as `daemon` events on the page's event stream, keyed by that id.
'use strict';

window.S2I.talk = (() => {
  const { $, el, api, idPath, imageHash, pad, stateLine } = window.S2I;
  const KEEP_REQUESTS = 10;
  const RECORD_LIMIT_MS = 15000;
  const BUSY = 'Busy: the daemon is still drawing earlier requests; try again in a moment';
  const NO_MIC = 'The microphone needs HTTPS or localhost; type what to draw instead.';
  const ui = {
    panel: $('#talk-panel'), talk: $('#talk'), form: $('#prompt-form'),
    input: $('#prompt-input'), status: $('#talk-status'), requests: $('#requests'),
  };

  // ---------------------------------------------------------- request log

  const rows = new Map(); // request id -> its li, for requests made from this page
  const early = new Map(); // request id -> events that came before its 202 answer

  const withDetail = (e, text) => (e.detail ? `${text} (${e.detail})` : text);
  const REASONS = {
    toxic: (e) => {
      const why = e.detail || (Array.isArray(e.flagged) ? e.flagged.join(', ') : '');
      return `Refused: the request was flagged as harmful${why ? ` (${why})` : ''}`;
    },
    empty: () => 'Nothing was heard',
    unclear: (e) => `Could not make out the request${e.detail ? `: ${e.detail}` : ''}`,
    busy: () => BUSY,
    unsupported: (e) => withDetail(e, 'Refused: moderation does not cover this language'),
    error: (e) => `Something went wrong${e.detail ? `: ${e.detail}` : ''}`,
    shutdown: () => 'The daemon stopped',
  };
  /** Why a request got no picture, in words (the reasons of events.REJECT_REASONS). */
  const reasonText = (e) =>
    (REASONS[e.reason] ? REASONS[e.reason](e) : withDetail(e, `Refused: ${e.reason}`));
  const kindOf = (e) => e.event || e.type || '';

  function pictureLink(e) {
    if (typeof e.image_id !== 'string') {
      return el('span', { text: `Done: ${String(e.path || '').split('/').pop()}` });
    }
    return el('a', { class: 'picture', href: imageHash(e.image_id), 'data-id': e.image_id },
      el('img', { src: `/thumbs/${idPath(e.image_id)}`, alt: e.prompt || 'the new picture' }),
      el('span', { text: 'Open the picture' }));
  }

  function applyToRow(li, e) {
    const outcome = li.querySelector('.outcome');
    const say = (text) => {
      if (!li.dataset.done) outcome.textContent = text;
    };
    switch (kindOf(e)) {
      case 'utterance': say('Transcribing…'); break;
      case 'transcript':
        li.querySelector('.transcript').textContent = e.text || '';
        say('Checking the words…');
        break;
      case 'accepted': say('Waiting to draw…'); break;
      case 'progress': say(`Drawing ${e.step}/${e.steps}`); break;
      case 'error': say(`Something went wrong: ${e.stage}: ${e.message}`); break;
      case 'image':
        li.dataset.done = '1';
        outcome.replaceChildren(pictureLink(e));
        break;
      case 'rejected':
        li.dataset.done = '1';
        outcome.classList.add('rejected');
        outcome.textContent = reasonText(e);
        break;
      default: break;
    }
  }

  /** Another request (a wake word): one line in the state line, nothing else. */
  function stateFromDaemon(e) {
    const lines = {
      wake: () => `Heard the wake word (${e.model || '?'}, score ${Number(e.score).toFixed(2)})`,
      utterance: () => 'Heard you; transcribing…',
      transcript: () => `Heard: “${e.text || ''}”`,
      accepted: () => 'Accepted; drawing next',
      progress: () => `Drawing ${e.step}/${e.steps}`,
      image: () => 'A new picture is in the gallery',
      rejected: () => reasonText(e),
      error: () => `Something went wrong: ${e.stage}: ${e.message}`,
    };
    const line = lines[kindOf(e)];
    if (line) stateLine(line());
  }

  /** A `daemon` event from the stream: to its request's row, or to the state line. */
  function onDaemon(e) {
    if (!e || typeof e !== 'object') return;
    const li = e.id ? rows.get(e.id) : undefined;
    if (li) {
      applyToRow(li, e);
      return;
    }
    if (e.id) {
      early.set(e.id, [...(early.get(e.id) || []), e]);
      if (early.size > 50) early.delete(early.keys().next().value);
    }
    stateFromDaemon(e);
  }

  function addRequest(id, typed, text) {
    const li = el('li', { class: 'request', 'data-request': id },
      el('span', { class: 'what', text: typed ? 'You typed…' : 'You said…' }),
      el('span', { class: 'transcript', text }),
      el('span', { class: 'outcome', text: typed ? 'Checking the words…' : 'Transcribing…' }));
    ui.requests.prepend(li);
    rows.set(id, li);
    while (ui.requests.children.length > KEEP_REQUESTS) {
      const oldest = ui.requests.lastElementChild;
      rows.delete(oldest.dataset.request);
      oldest.remove();
    }
    for (const e of early.get(id) || []) applyToRow(li, e);
    early.delete(id);
  }

  const say = (text) => { ui.status.textContent = text; };

  /** The answer to /api/speak or /api/generate, in words; true when accepted. */
  function answered(res, typed, text) {
    if (res.ok && res.data.request) {
      addRequest(String(res.data.request), typed, text);
      say('');
      return true;
    }
    say(res.status === 503 ? BUSY : res.data.error);
    return false;
  }

  // --------------------------------------------------------------- talking

  const rec = { recorder: null, stream: null, chunks: [], started: 0, ticker: 0, limit: 0 };

  /** Browsers give the microphone to secure origins only (HTTPS, or this machine). */
  function micUnavailable() {
    const host = location.hostname;
    const local = host === 'localhost' || host.endsWith('.localhost')
      || host === '127.0.0.1' || host === '[::1]';
    if (!window.isSecureContext && !local) return NO_MIC;
    const media = navigator.mediaDevices;
    if (!media || !media.getUserMedia || typeof MediaRecorder === 'undefined') return NO_MIC;
    return '';
  }

  function talkLabel(text, recording) {
    ui.talk.querySelector('.label').textContent = text;
    ui.talk.setAttribute('aria-pressed', String(recording));
    ui.talk.classList.toggle('recording', recording);
  }

  /** Opus in WebM (Chromium) or Ogg (Firefox): small, and the daemon decodes both. */
  function pickType() {
    const wanted = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus'];
    return wanted.find((type) => MediaRecorder.isTypeSupported(type)) || '';
  }

  function micError(err) {
    if (err && err.name === 'NotAllowedError') {
      return 'The browser was not allowed to use the microphone; allow it in the site settings.';
    }
    if (err && err.name === 'NotFoundError') return 'No microphone was found.';
    return `The microphone could not be opened: ${err && err.message ? err.message : err}`;
  }

  async function startRecording() {
    ui.talk.disabled = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      ui.talk.disabled = false;
      say(micError(err));
      return;
    }
    ui.talk.disabled = false;
    const type = pickType();
    const options = type ? { mimeType: type } : {};
    const recorder = new MediaRecorder(stream, options);
    Object.assign(rec, { recorder, stream, chunks: [], started: Date.now() });
    recorder.addEventListener('dataavailable', (event) => {
      if (event.data && event.data.size) rec.chunks.push(event.data);
    });
    recorder.addEventListener('stop', () => finishRecording(recorder, type));
    recorder.start();
    const tick = () => {
      const seconds = Math.floor((Date.now() - rec.started) / 1000);
      talkLabel(`Stop 0:${pad(seconds)}`, true);
    };
    tick();
    rec.ticker = setInterval(tick, 250);
    rec.limit = setTimeout(stopRecording, RECORD_LIMIT_MS);
    say('Recording… say what to draw, then press Stop.');
  }

  function stopRecording() {
    if (rec.recorder && rec.recorder.state !== 'inactive') rec.recorder.stop();
  }

  async function finishRecording(recorder, type) {
    clearInterval(rec.ticker);
    clearTimeout(rec.limit);
    rec.stream.getTracks().forEach((track) => track.stop());
    const blob = new Blob(rec.chunks, { type: recorder.mimeType || type || 'audio/webm' });
    Object.assign(rec, { recorder: null, stream: null, chunks: [] });
    talkLabel('Talk', false);
    if (!blob.size) {
      say('Nothing was recorded; check the microphone.');
      return;
    }
    say('Sending…');
    const headers = { 'Content-Type': blob.type || 'audio/webm' };
    const res = await api('/api/speak', { method: 'POST', headers, body: blob });
    answered(res, false, '');
  }

  async function submitPrompt(event) {
    event.preventDefault();
    const prompt = ui.input.value.trim();
    if (!prompt) {
      say('Type what to draw first.');
      return;
    }
    say('Sending…');
    const headers = { 'Content-Type': 'application/json' };
    const body = JSON.stringify({ prompt });
    const res = await api('/api/generate', { method: 'POST', headers, body });
    if (answered(res, true, prompt)) ui.input.value = '';
  }

  /** Sets the panel up from GET /api/status: talk, or say why this page is browse-only. */
  function start(status) {
    ui.panel.dataset.talk = status.talk ? 'on' : 'off';
    if (!status.talk) {
      ui.status.replaceChildren(
        'Browse-only: this gallery is not served by the daemon, so it cannot take requests. Set ',
        el('code', { text: '[gallery] serve = true' }), " in the daemon's config.");
      return;
    }
    ui.talk.hidden = false;
    ui.form.hidden = false;
    ui.form.addEventListener('submit', submitPrompt);
    const why = micUnavailable();
    if (why) {
      ui.talk.disabled = true;
      ui.talk.title = why;
      say(why);
      return;
    }
    ui.talk.addEventListener('click', () => (rec.recorder ? stopRecording() : startRecording()));
  }

  return { start, onDaemon, say };
})();
