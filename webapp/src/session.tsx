// The session: a token from `register`/`login`, kept in localStorage and
// sent as `Authorization: Bearer …`. Logging out forgets it and starts a
// fresh GraphQL client, so no cached private data survives.

import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { Client, Provider, cacheExchange, fetchExchange } from "urql";

const KEY = "rondo.session";

export interface SessionUser {
  id: string;
  name: string;
  role: "ADMIN" | "LISTENER";
}

interface Stored {
  token: string;
  user: SessionUser;
  expiresAt: string;
}

interface SessionValue {
  user: SessionUser | null;
  token: string | null;
  signIn: (s: Stored) => void;
  signOut: () => void;
}

const SessionContext = createContext<SessionValue>({
  user: null,
  token: null,
  signIn: () => {},
  signOut: () => {},
});

function load(): Stored | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Stored;
    return new Date(s.expiresAt).getTime() > Date.now() ? s : null;
  } catch {
    return null;
  }
}

export function makeClient(token: string | null): Client {
  return new Client({
    url: "/graphql",
    exchanges: [cacheExchange, fetchExchange],
    // Show what is cached at once, then what the server says now (uploads,
    // playlist edits and other clients change the catalog under us).
    requestPolicy: "cache-and-network",
    fetchOptions: () => (token ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [stored, setStored] = useState<Stored | null>(load);
  const client = useMemo(() => makeClient(stored?.token ?? null), [stored?.token]);
  const signIn = useCallback((s: Stored) => {
    localStorage.setItem(KEY, JSON.stringify(s));
    setStored(s);
  }, []);
  const signOut = useCallback(() => {
    localStorage.removeItem(KEY);
    setStored(null);
  }, []);
  const value = useMemo(
    () => ({ user: stored?.user ?? null, token: stored?.token ?? null, signIn, signOut }),
    [stored, signIn, signOut],
  );
  return (
    <SessionContext.Provider value={value}>
      <Provider value={client}>{children}</Provider>
    </SessionContext.Provider>
  );
}

export function useSession(): SessionValue {
  return useContext(SessionContext);
}
