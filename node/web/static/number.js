// The number page's verdict: fetch the JSON API's answer and the
// consortium's members, verify them here (verify.js) and say what was found.
// Only textContent is written: nothing from the answer becomes markup.
import { verifyAnswer, verifyLogProofs } from './verify.js';

async function main() {
  const box = document.getElementById('browser-verdict');
  const page = document.getElementById('number-page');
  if (!box || !page) return;
  // The number asked is the one in the address bar, never the answer's.
  const asked = decodeURIComponent(location.pathname.replace(/^\/numbers\//, ''));
  box.textContent = 'verifying… 验证中';
  try {
    const [api, trust] = await Promise.all([
      fetch(page.dataset.api, { headers: { Accept: 'application/json' } }).then((r) => r.json()),
      fetch('/api/v1/consortium').then((r) => r.json()),
    ]);
    const v = verifyAnswer(asked, api, trust, Date.now());
    const k = v.ok ? 1 + v.cosigners.length : 0;
    box.dataset.verified = v.ok ? 'yes' : 'no';
    box.className = v.ok ? 'verdict ok' : 'verdict bad';
    const a = v.answer;
    const what = a && a.category !== null
      ? `${a.category}, risk ${a.risk}, score ${a.score}, ${a.markers.length} marker(s)`
      : 'not marked';
    box.textContent = v.ok
      ? `已由您的浏览器验证 verified by your browser: ${k} of ${v.members} members (${v.signer} signed; ${v.cosigners.join(', ')} cosigned) — ${what}`
      : `未验证 not verified by your browser: ${v.why}`;
    const logBox = document.getElementById('browser-log-verdict');
    const log = verifyLogProofs(api, trust);
    if (logBox && log.total) {
      logBox.dataset.verified = log.ok && log.proven === log.total ? 'yes' : 'no';
      logBox.textContent = log.ok
        ? `日志证明 log proofs checked by your browser: ${log.proven} of ${log.total} records in ${api.node}'s log checkpoint (cosigned by ${log.cosigners.join(', ')})`
        : `日志证明未通过 log proofs not verified by your browser: ${log.why}`;
    }
  } catch (e) {
    box.dataset.verified = 'no';
    box.className = 'verdict bad';
    box.textContent = `未验证 not verified by your browser: ${e.message}`;
  }
}

main();
