// The web app end to end in Debian's Chromium (playwright-core, no browser
// download): log in (and a wrong password), upload a file through the page,
// find it by search, play it (currentTime advances), seek (the position
// follows), survive the loss of the storage node serving it (the test kills
// it when told), see its cover in the list, the player bar, the Media
// Session and its album's page (and give the album an image of its own,
// then take it back), make a playlist and add the song, see the cluster page as
// an admin, and a listener's view after registering. Screenshots of each page go to SHOTS.
//
// Usage: node webapp.mjs <base URL> <screenshot dir> <audio file> <title> <album> <cover image>
// Prints JSON lines: {"event":"playing","src":…} (then waits for a line
// "killed" on stdin) and finally {"event":"done",…}.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';

const [base, shots, audioFile, title, albumTitle, coverFile] = process.argv.slice(2);
if (!base || !shots || !audioFile || !title || !albumTitle || !coverFile) {
  console.error('usage: node webapp.mjs <base URL> <screenshot dir> <audio file> <title> <album> <cover image>');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const emit = (o) => console.log(JSON.stringify(o));
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic', '--mute-audio',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const result = { event: 'done' };
const axeSource = readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');
result.accessibility = {};
// A screenshot, and an accessibility audit (axe-core, WCAG 2 A and AA):
// the serious and critical violations, per page.
const shot = async (page, name) => {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  await page.evaluate(axeSource);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa'] });
    return {
      passed: r.passes.length,
      violations: r.violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`),
    };
  });
  result.accessibility[name] = found;
};
try {
  // The deployment's certificates come from its own dev CA.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  // The gateway serves the app with a strict content security policy:
  // anything it blocks is a bug of the app or of the policy.
  const cspViolations = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });

  // ada is an admin the operator made (`rondo user create --admin`: the
  // test does it before this script runs; registering makes listeners
  // only). Log in with a wrong password, then the right one.
  await page.goto(`${base}/login`);
  await shot(page, 'login');
  await page.getByLabel('Name').fill('ada');
  await page.getByLabel('Password').fill('wrong password');
  await page.getByRole('button', { name: 'Log in' }).click();
  result.wrongPassword = await page.getByRole('alert').textContent();
  await page.getByLabel('Password').fill('analytical engine');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('user-name').waitFor();
  result.loggedInAs = await page.getByTestId('user-name').textContent();

  // Upload through the page: a real file and a file that is not audio.
  await page.getByRole('link', { name: 'Upload', exact: true }).click();
  await page.getByTestId('file-input').setInputFiles([
    { name: basename(audioFile), mimeType: 'audio/wav', buffer: readFileSync(audioFile) },
    { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not audio at all') },
  ]);
  await page.locator('[data-testid=upload-item][data-state=done]').waitFor();
  await page.locator('[data-testid=upload-item][data-state=failed]').waitFor();
  result.uploadError = await page.locator('[data-testid=upload-item][data-state=failed]').textContent();
  await shot(page, 'upload');

  // Find it by search (a prefix of one word), play it.
  await page.getByRole('link', { name: 'Search', exact: true }).click();
  const word = title.split(' ')[0];
  await page.getByLabel('Search songs, albums and artists').fill(word.slice(0, 4).toLowerCase());
  await page.getByRole('button', { name: `Play ${title}` }).click();
  const audio = page.getByTestId('audio');
  await page.waitForFunction(() => {
    const a = document.querySelector('[data-testid=audio]');
    return a && !a.paused && a.currentTime > 0.5;
  });
  result.playedTo = await audio.evaluate((a) => a.currentTime);
  result.duration = await audio.evaluate((a) => a.duration);
  // Covers: the song's row, the player bar and the Media Session (the
  // lock screen, the OS media controls) show the picture in its file.
  const loaded = (selector) =>
    page.waitForFunction((s) => {
      const img = document.querySelector(s);
      return img && img.complete && img.naturalWidth > 0;
    }, selector);
  await loaded('[data-testid=player-cover]');
  result.playerCover = await page.getByTestId('player-cover').evaluate((i) => ({ width: i.naturalWidth, src: i.src }));
  await loaded('[data-testid=song-row] [data-testid=row-cover]');
  result.rowCover = await page.getByTestId('row-cover').first().evaluate((i) => i.naturalWidth);
  result.mediaArtwork = await page.evaluate(() => (navigator.mediaSession.metadata?.artwork ?? []).map((a) => a.src));
  await shot(page, 'search-playing');

  // Seek with the slider to 40 % of the song.
  const target = Math.round(result.duration * 0.4 * 10) / 10;
  await page.getByLabel('Seek').evaluate((el, t) => {
    const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    set.call(el, String(t));
    el.dispatchEvent(new Event('input', { bubbles: true }));
    el.dispatchEvent(new PointerEvent('pointerup', { bubbles: true }));
  }, target);
  await page.waitForFunction((t) => {
    const a = document.querySelector('[data-testid=audio]');
    return a && a.currentTime >= t && !a.seeking;
  }, target);
  result.seekTarget = target;
  result.afterSeek = await audio.evaluate((a) => a.currentTime);

  // The storage node serving the song dies (the test kills it). The
  // listener then seeks past what is buffered: the player finds the URL
  // dead, asks for a fresh one (another replica) and resumes there, with
  // no click.
  const before = await audio.evaluate((a) => a.src);
  emit({ event: 'playing', src: before });
  await nextLine();
  const killedAt = Date.now();
  const buffered = await audio.evaluate((a) => (a.buffered.length ? a.buffered.end(a.buffered.length - 1) : 0));
  const far = Math.min(result.duration - 5, Math.max(buffered + 10, result.duration * 0.7));
  result.bufferedAtKill = buffered;
  result.farTarget = far;
  await audio.evaluate((a, t) => { a.currentTime = t; }, far);
  await page.waitForFunction(
    ([src, t]) => {
      const a = document.querySelector('[data-testid=audio]');
      return a && a.src !== src && !a.paused && a.currentTime > t + 1;
    },
    [before, far],
    { timeout: 45000 },
  );
  result.recoverySeconds = (Date.now() - killedAt) / 1000;
  result.resumedFrom = await audio.evaluate((a) => a.src);
  result.resumedAt = await audio.evaluate((a) => a.currentTime);
  await shot(page, 'recovered');

  // A playlist with the song.
  await page.getByRole('link', { name: 'Playlists', exact: true }).click();
  await page.getByLabel('New playlist').fill('Road trip');
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('link', { name: /Road trip/ }).waitFor();
  await page.getByRole('link', { name: 'Home', exact: true }).click();
  await page.getByRole('button', { name: `Add ${title} to a playlist` }).first().click();
  await page.getByRole('menuitem', { name: 'Road trip' }).click();
  await page.getByText('Added to Road trip').waitFor();
  await shot(page, 'home');
  await page.getByRole('link', { name: 'Playlists', exact: true }).click();
  await page.getByRole('link', { name: /Road trip/ }).click();
  await page.getByTestId('playlist-song').first().waitFor();
  result.playlistSongs = await page.getByTestId('playlist-song').allTextContents();
  await shot(page, 'playlist');

  // The cluster page: every storage node, the ring, the gateways.
  await page.getByRole('link', { name: 'Cluster', exact: true }).click();
  await page.getByTestId('nodes').locator('tbody tr').first().waitFor();
  result.clusterNodes = await page.getByTestId('nodes').locator('tbody tr').count();
  result.clusterUp = await page.getByTestId('nodes').locator('tbody td', { hasText: 'UP' }).count();
  result.gateways = await page.getByTestId('gateways').locator('tbody tr').count();
  // Placement: full replication here, and the node killed above is down,
  // so every partition has a copy too few, once the gateway has seen it
  // down (the page refreshes every two seconds).
  await page.getByTestId('below-r').filter({ hasText: 'is down' }).waitFor();
  result.belowR = await page.getByTestId('below-r').textContent();
  result.clusterIn = await page.getByTestId('nodes').locator('tbody td', { hasText: /^in$/ }).count();
  await shot(page, 'cluster');

  // Browsing pages, and the phone layout.
  for (const [name, link] of [['songs', 'Songs'], ['albums', 'Albums'], ['artists', 'Artists']]) {
    await page.getByRole('link', { name: link, exact: true }).click();
    await page.getByRole('heading', { name: link }).waitFor();
    if (name === 'albums') {
      // Two albums: the uploaded file's, and the one of an MP3 ffmpeg
      // made with a JPEG attached.
      await page.waitForFunction(
        () => [...document.querySelectorAll('[data-testid=card-cover]')].filter((i) => i.complete && i.naturalWidth > 0).length >= 2,
      );
      result.cardCovers = await page.getByTestId('card-cover').evaluateAll((imgs) => imgs.map((i) => i.naturalWidth));
    }
    await shot(page, name);
  }
  // The album's page, with its cover.
  await page.getByRole('link', { name: 'Albums', exact: true }).click();
  await page.getByRole('link', { name: new RegExp(albumTitle) }).first().click();
  await loaded('[data-testid=album-cover]');
  result.albumCover = await page.getByTestId('album-cover').evaluate((i) => i.naturalWidth);
  await shot(page, 'album');
  // The admin gives the album an image of its own, then takes it back.
  const coverWidth = (w) =>
    page.waitForFunction((want) => {
      const img = document.querySelector('[data-testid=album-cover]');
      return img && img.complete && img.naturalWidth === want;
    }, w);
  await page.getByTestId('cover-input').setInputFiles(coverFile);
  await coverWidth(600);
  result.ownAlbumCover = await page.getByTestId('album-cover').evaluate((i) => i.naturalWidth);
  await shot(page, 'album-own-cover');
  await page.getByRole('button', { name: "Use the first track's cover" }).click();
  await coverWidth(400);
  result.albumCoverAgain = await page.getByTestId('album-cover').evaluate((i) => i.naturalWidth);
  await page.setViewportSize({ width: 375, height: 740 });
  await page.getByRole('link', { name: 'Home', exact: true }).click();
  await shot(page, 'home-phone');

  // A second account is a listener: no upload or cluster pages.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('link', { name: 'Register', exact: true }).click();
  await shot(page, 'register');
  await page.getByLabel('Name').fill('lin');
  await page.getByLabel('Password').fill('listener password');
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByTestId('user-name').waitFor();
  result.listenerSeesUpload = await page.getByRole('link', { name: 'Upload', exact: true }).count();

  // The listener stars the song; the star stays after a reload.
  await page.getByRole('button', { name: `Star ${title}` }).first().click();
  await page.getByRole('button', { name: `Unstar ${title}` }).first().waitFor();
  await page.reload();
  result.starredAfterReload = await page.getByRole('button', { name: `Unstar ${title}` }).first().getAttribute('aria-pressed');

  // Plays it (at 8x: half of it is heard in seconds): the play is
  // counted and the home page, open meanwhile, shows it as recently
  // played with no reload (the answer names the song, so the page's
  // queries of songs are fetched again).
  const recorded = page.waitForResponse(
    (r) => r.url().endsWith('/graphql') && (r.request().postData() || '').includes('RecordPlay'),
    { timeout: 90000 },
  );
  await page.getByRole('button', { name: `Play ${title}` }).first().click();
  await page.waitForFunction(() => {
    const a = document.querySelector('[data-testid=audio]');
    return a && !a.paused && a.currentTime > 0.2;
  });
  await audio.evaluate((a) => { a.playbackRate = 8; });
  // Paused once the play is recorded, so that the queue does not move on
  // to the next song (which would count as played too) while the shelf
  // loads; at 8x, half the song is heard in 15 s and its end is 15 s later.
  await recorded;
  await audio.evaluate((a) => a.pause());
  const shelf = page.getByRole('heading', { name: 'Recently played' });
  await shelf.waitFor({ timeout: 30000 });
  result.recentlyPlayed = await page.locator('section[aria-labelledby=recently-played] [data-testid=song-row]').allTextContents();
  await shot(page, 'home-recently-played');

  // The account page: an app password for a Subsonic app, shown once,
  // working as an API key, then revoked.
  await page.getByTestId('user-name').click();
  await page.getByLabel('New app password for').fill('DSub on my phone');
  await page.getByRole('button', { name: 'Create' }).click();
  result.appSecret = await page.getByTestId('app-secret').textContent();
  result.appPasswords = await page.getByTestId('app-password-name').allTextContents();
  await shot(page, 'account');
  result.subsonicPing = await page.evaluate(async (key) => {
    const r = await fetch(`/rest/ping.view?apiKey=${key}&f=json&v=1.16.1&c=web`);
    return (await r.json())['subsonic-response'].status;
  }, result.appSecret);
  await page.getByRole('button', { name: 'Revoke DSub on my phone' }).click();
  await page.getByText('No app passwords yet.').waitFor();
  result.pageErrors = consoleErrors;
  result.cspViolations = cspViolations;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
  try {
    const page = browser.contexts()[0]?.pages()[0];
    if (page) {
      result.debug = await page.evaluate(() => {
        const a = document.querySelector('[data-testid=audio]');
        const st = document.querySelector('[role=status]');
        return a && {
          src: a.src, currentTime: a.currentTime, paused: a.paused, readyState: a.readyState,
          networkState: a.networkState, error: a.error && a.error.code, seeking: a.seeking,
          status: st && st.textContent,
        };
      });
      await page.screenshot({ path: `${shots}/failure.png`, fullPage: true });
    }
  } catch {
    // Best effort.
  }
} finally {
  await browser.close();
  emit(result);
  lines.close();
}
