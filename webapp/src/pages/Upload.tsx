// Upload: drop many files (or pick them); each uploads with the GraphQL
// multipart request spec, with its own progress and result. XMLHttpRequest
// is used because fetch reports no upload progress.

import { useCallback, useRef, useState } from "react";
import { useSession } from "../session";

type Item =
  | { key: string; name: string; state: "queued" }
  | { key: string; name: string; state: "uploading"; progress: number }
  | { key: string; name: string; state: "done"; title: string; duplicate: boolean }
  | { key: string; name: string; state: "failed"; code: string; message: string };

const MUTATION =
  "mutation($file: Upload!) { uploadSong(file: $file) { duplicate song { id title artist { name } } } }";

/** What an upload did: the song's title, and whether the file was in the library already. */
export type Uploaded = { title: string; duplicate: boolean };

/** Uploads one file; `onProgress` gets 0..1. */
export function uploadFile(file: File, token: string | null, onProgress: (p: number) => void): Promise<Uploaded> {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("operations", JSON.stringify({ query: MUTATION, variables: { file: null } }));
    form.append("map", JSON.stringify({ "0": ["variables.file"] }));
    form.append("0", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/graphql");
    if (token) xhr.setRequestHeader("authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject({ code: "NETWORK", message: "The connection failed" });
    xhr.onload = () => {
      try {
        const body = JSON.parse(xhr.responseText);
        const err = body.errors?.[0];
        if (err) reject({ code: err.extensions?.code ?? "ERROR", message: err.message });
        else resolve({ title: body.data.uploadSong.song.title, duplicate: body.data.uploadSong.duplicate });
      } catch {
        reject({ code: `HTTP_${xhr.status}`, message: xhr.statusText || "Unexpected answer" });
      }
    };
    xhr.send(form);
  });
}

const EXPLAIN: Record<string, string> = {
  UNSUPPORTED_MEDIA: "Not a supported audio file (MP3, FLAC, Ogg, M4A/AAC/ALAC, WAV, AIFF)",
  PAYLOAD_TOO_LARGE: "Too large",
  FORBIDDEN: "Uploading needs an admin account",
  UNAUTHENTICATED: "Log in first",
};

export function Upload() {
  const { token, user } = useSession();
  const [items, setItems] = useState<Item[]>([]);
  const [over, setOver] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  const update = (key: string, next: Item) => setItems((xs) => xs.map((x) => (x.key === key ? next : x)));

  const start = useCallback(
    async (files: File[]) => {
      const batch = files.map((f, i) => ({ key: `${Date.now()}-${i}-${f.name}`, name: f.name, state: "queued" as const, file: f }));
      setItems((xs) => [...batch.map(({ key, name }) => ({ key, name, state: "queued" as const })), ...xs]);
      // Two at a time: the gateway streams each to a storage node.
      let next = 0;
      const worker = async () => {
        while (next < batch.length) {
          const { key, name, file } = batch[next++];
          update(key, { key, name, state: "uploading", progress: 0 });
          try {
            const { title, duplicate } = await uploadFile(file, token, (p) =>
              update(key, { key, name, state: "uploading", progress: p }),
            );
            update(key, { key, name, state: "done", title, duplicate });
          } catch (e) {
            const { code, message } = e as { code: string; message: string };
            update(key, { key, name, state: "failed", code, message: EXPLAIN[code] ? `${EXPLAIN[code]} (${message})` : message });
          }
        }
      };
      await Promise.all([worker(), worker()]);
    },
    [token],
  );

  return (
    <section>
      <h1>Upload</h1>
      {user?.role !== "ADMIN" && <p className="sub">Uploads need an admin account.</p>}
      <div
        className={`dropzone${over ? " over" : ""}`}
        data-testid="dropzone"
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => {
          e.preventDefault();
          setOver(false);
          void start(Array.from(e.dataTransfer.files));
        }}
      >
        <p>Drop audio files here, or</p>
        <label className="button">
          Choose files
          <input
            ref={input}
            type="file"
            multiple
            accept="audio/*"
            className="visually-hidden"
            data-testid="file-input"
            onChange={(e) => {
              void start(Array.from(e.target.files ?? []));
              e.target.value = "";
            }}
          />
        </label>
      </div>
      <ul className="uploads" aria-live="polite">
        {items.map((it) => (
          <li key={it.key} data-testid="upload-item" data-state={it.state}>
            <span className="name">{it.name}</span>
            {it.state === "queued" && <span className="sub">waiting</span>}
            {it.state === "uploading" && (
              <progress max={1} value={it.progress} aria-label={`Uploading ${it.name}`}>
                {Math.round(it.progress * 100)}%
              </progress>
            )}
            {it.state === "done" &&
              (it.duplicate ? (
                <span className="sub">already in the library: {it.title}</span>
              ) : (
                <span className="ok">✓ {it.title}</span>
              ))}
            {it.state === "failed" && (
              <span className="error" role="alert">
                ✗ {it.message}
              </span>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}
