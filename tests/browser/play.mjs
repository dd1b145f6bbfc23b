// Plays a song in Chromium's <audio> element through the gateway's player
// page, then seeks, and prints what happened as JSON on stdout.
//
// Usage: node play.mjs <gateway base URL> <song title>
import { chromium } from 'playwright-core';

const [base, title] = process.argv.slice(2);
if (!base || !title) {
  console.error('usage: node play.mjs <gateway base URL> <song title>');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic', '--mute-audio',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const result = {};
try {
  // The cluster's certificates come from its own dev CA, which this
  // throw-away browser profile does not trust.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  await page.goto(`${base}/`);
  await page.getByText(title, { exact: false }).first().click();
  const audio = page.locator('#player');
  await page.waitForFunction(() => {
    const a = document.querySelector('#player');
    return a && !a.paused && a.currentTime > 0.3;
  });
  result.duration = await audio.evaluate(a => a.duration);
  result.playedTo = await audio.evaluate(a => a.currentTime);
  const target = Math.max(0, result.duration - 1.5);
  await audio.evaluate((a, t) => new Promise(resolve => {
    a.addEventListener('seeked', resolve, { once: true });
    a.currentTime = t;
  }), target);
  result.seekTarget = target;
  await page.waitForFunction(t => {
    const a = document.querySelector('#player');
    return a.currentTime > t + 0.2 || a.ended;
  }, target);
  result.afterSeek = await audio.evaluate(a => a.currentTime);
  result.error = await audio.evaluate(a => a.error ? a.error.message || String(a.error.code) : null);
  result.src = await audio.evaluate(a => a.currentSrc);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
